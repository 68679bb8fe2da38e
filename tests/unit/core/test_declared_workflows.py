"""The declared workflows (agent/model/workflows.py) and the workflows the runner runs
agree: every job kind is declared, every action's task belongs to exactly one kind, and
each workflow has a step function for exactly the steps its kind declares."""

from __future__ import annotations

from agent.core.workflows.actions import action_workflows
from agent.model.job import JobKind
from agent.model.transitions import RULES
from agent.model.workflows import WORKFLOWS


def test_every_job_kind_is_declared_with_at_least_one_step():
    assert set(WORKFLOWS) == set(JobKind)
    assert all(d.steps and d.tasks and d.done_states for d in WORKFLOWS.values())


def test_each_task_an_action_runs_under_is_owned_by_exactly_one_kind():
    for action, rule in RULES.items():
        if rule.task is not None:
            owners = [k for k, d in WORKFLOWS.items() if rule.task in d.tasks]
            assert len(owners) == 1, (action, owners)


def test_each_workflow_has_a_function_for_exactly_its_declared_steps(world):
    wired = {**world.runner.workflows, **action_workflows(world.deps, world.batcher)}
    assert set(wired) == set(JobKind)
    for kind, workflow in wired.items():
        assert tuple(workflow.steps()) == WORKFLOWS[kind].steps, kind


def test_steps_left_are_those_after_the_last_recorded_one():
    create = WORKFLOWS[JobKind.CREATE]
    assert create.steps_left("") == create.steps
    assert create.steps_left("domain") == ("started", "running")
    assert create.steps_left(create.final_step) == ()
    assert create.steps_left("a step of an older version") == create.steps
