"""Every log line of a full create/delete with a given password, personality files and a
generated keypair's key, at debug level, is free of the password, its hash, the file
contents, the keypair's private key and the token."""

from __future__ import annotations

import base64

from tests.e2e.conftest import IMAGE_ID
from tests.support.daemon import TOKENS

PASSWORD = "Sekr3t-Admin-Pass"
CONTENTS = "top-secret-file-contents-4711\n"


def test_no_secret_reaches_a_log_line(daemon):
    b64 = base64.b64encode(CONTENTS.encode()).decode()
    with daemon.client() as api:
        made = api.post("/os-keypairs", json={"keypair": {"name": "quiet-key"}})
        assert made.status_code == 200, made.text
        private_lines = made.json()["keypair"]["private_key"].splitlines()[1:-1]
        r = api.post("/servers", json={"server": {
            "name": "quiet", "imageRef": IMAGE_ID, "flavorRef": "1", "adminPass": PASSWORD,
            "personality": [{"path": "/etc/secret.txt", "contents": b64}],
            "key_name": "quiet-key"}})
        assert r.status_code == 202, r.text
        server_id = r.json()["server"]["id"]
        daemon.wait_status(server_id, {"ACTIVE"}, timeout=240)
        # A bad request carrying the password must not echo it either.
        bad = api.post("/servers", json={"server": {"name": "", "imageRef": IMAGE_ID,
                                                    "flavorRef": "1", "adminPass": PASSWORD}})
        assert bad.status_code == 400 and PASSWORD not in bad.text
        assert api.delete(f"/servers/{server_id}").status_code == 204
        daemon.wait_status(server_id, {"DELETED"}, timeout=60)
    log = daemon.log()
    assert "job.succeeded" in log and "api.request" in log  # the log really was written
    for secret in (PASSWORD, CONTENTS.strip(), b64, TOKENS["alice"][0], "$6$", *private_lines):
        assert secret not in log, f"{secret[:6]}... found in the daemon's log"
