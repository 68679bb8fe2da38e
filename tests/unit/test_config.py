"""Config precedence: file < environment < flags; bad values are clear errors."""

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError


def test_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "agent.toml"
    f.write_text('virt_type = "kvm"\nlibvirt_uri = "test:///default"\nlog_level = "debug"\n')
    c = load_config(f, {"log_level": "error"}, environ={"COMPUTE_AGENT_VIRT_TYPE": "qemu"})
    assert c.libvirt_uri == "test:///default"
    assert c.virt_type == "qemu"
    assert c.log_level == "error"


def test_missing_default_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr("agent.config.DEFAULT_CONFIG_FILE", tmp_path / "absent.toml")
    c = load_config(environ={})
    assert c.state_dir == Path("/var/lib/compute-agent")
    assert c.virt_type == "auto"


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_unknown_key_and_bad_value_are_errors(tmp_path):
    f = tmp_path / "agent.toml"
    f.write_text('virt_typ = "kvm"\n')
    with pytest.raises(ConfigError, match="virt_typ"):
        load_config(f, environ={})
    with pytest.raises(ConfigError, match="virt_type"):
        load_config(None, {"virt_type": "xen"}, environ={})


def test_image_dirs_from_env_split_on_pathsep():
    c = load_config(None, environ={"COMPUTE_AGENT_IMAGE_DIRS": "/a:/b"})
    assert c.image_dirs == [Path("/a"), Path("/b")]


def test_a_state_dir_too_long_for_console_sockets_is_refused():
    with pytest.raises(ConfigError, match="too long"):
        load_config(None, {"state_dir": "/var/tmp/" + "x" * 60}, environ={})
    assert load_config(None, {"state_dir": "/var/tmp/" + "x" * 30}, environ={})


def test_a_password_policy_no_password_can_meet_is_refused_at_load(tmp_path):
    f = tmp_path / "agent.toml"
    f.write_text("[password_policy]\nmin_length = 20\nmax_length = 12\n")
    with pytest.raises(ConfigError, match="min_length 20 is greater than max_length 12"):
        load_config(f, environ={})
    f.write_text("[password_policy]\nmin_length = 1\nmax_length = 3\nrequire_symbol = true\n")
    with pytest.raises(ConfigError, match="4 required character classes"):
        load_config(f, environ={})
    f.write_text("[password_policy]\nmax_length = 12\n")
    assert load_config(f, environ={}).password_policy.generated_size == 12


def test_multi_instance_name_template_must_format_with_name_uuid_and_count():
    assert load_config(None, environ={}).multi_instance_display_name_template == "%(name)s-%(count)d"
    ok = load_config(None, {"multi_instance_display_name_template": "%(name)s.%(count)02d"},
                     environ={})
    assert ok.multi_instance_display_name_template == "%(name)s.%(count)02d"
    for bad in ("%(nam)s-%(count)d", "%(name)s-%(count)q", "%(name)s-%(uuid)d"):
        with pytest.raises(ConfigError, match="multi_instance_display_name_template"):
            load_config(None, {"multi_instance_display_name_template": bad}, environ={})


def tokens_file(tmp_path: Path, *tokens: str) -> Path:
    f = tmp_path / "agent.toml"
    f.write_text("".join(f'[[tokens]]\ntoken = "{t}"\nproject_id = "p{i}"\nuser_id = "u{i}"\n'
                         for i, t in enumerate(tokens)))
    return f


@pytest.mark.parametrize("token", ["", " ", "has space-SECRET", "tab\\tSECRET"])
def test_an_empty_or_unsendable_token_is_refused_at_load_without_showing_it(tmp_path, token):
    with pytest.raises(ConfigError, match="visible ASCII") as e:
        load_config(tokens_file(tmp_path, "good-token-1", token), environ={})
    assert "SECRET" not in str(e.value)


def test_a_token_given_twice_is_refused_naming_the_entries_not_the_token(tmp_path):
    with pytest.raises(ConfigError, match="entries 1 and 3 have the same token") as e:
        load_config(tokens_file(tmp_path, "dup-SECRET", "other", "dup-SECRET"), environ={})
    assert "SECRET" not in str(e.value)


def test_distinct_tokens_load(tmp_path):
    c = load_config(tokens_file(tmp_path, "a-token", "b-token"), environ={})
    assert [t.project_id for t in c.tokens] == ["p0", "p1"]


def test_the_scheduler_section_defaults_to_novas_ratios_and_refuses_nonsense(tmp_path):
    assert load_config(None, environ={}).scheduler.model_dump() == {
        "cpu_allocation_ratio": 16.0, "ram_allocation_ratio": 1.5, "disk_allocation_ratio": 1.0}
    f = tmp_path / "agent.toml"
    f.write_text("[scheduler]\nram_allocation_ratio = 1.0\n")
    assert load_config(f, environ={}).scheduler.ram_allocation_ratio == 1.0
    f.write_text("[scheduler]\ncpu_allocation_ratio = 0\n")
    with pytest.raises(ConfigError, match="cpu_allocation_ratio"):
        load_config(f, environ={})
    f.write_text("[scheduler]\nweighers = 1\n")
    with pytest.raises(ConfigError, match="weighers"):
        load_config(f, environ={})
