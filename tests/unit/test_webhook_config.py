"""[[webhooks]] in the config: http and https URLs only, each once; neither a URL (which may
hold a token) nor a header value shows in an error or a repr."""

from __future__ import annotations

import base64

import pytest

from agent.config import load_config, webhook_key
from agent.errors import ConfigError


def config(tmp_path, text: str):  # type: ignore[no-untyped-def]
    file = tmp_path / "agent.toml"
    file.write_text(f'state_dir = "/tmp/ca-cfg"\n{text}')  # short: console socket paths
    return load_config(file, environ={})


def test_webhooks_are_read_with_their_options(tmp_path):
    c = config(tmp_path, 'webhook_backoff_max_s = 5\n[[webhooks]]\nurl = "https://h.example/x"\n'
                         'timeout_s = 3\nheaders = { Authorization = "Bearer hdr-SECRET" }\n')
    [hook] = c.webhooks
    assert (hook.url, hook.timeout_s, c.webhook_backoff_max_s) == ("https://h.example/x", 3, 5)
    assert hook.headers["Authorization"].get_secret_value() == "Bearer hdr-SECRET"
    assert "SECRET" not in repr(c)


@pytest.mark.parametrize("url", ["ftp://h.example/SECRET", "file:///etc/SECRET", "http:///SECRET",
                                 "http://[::1/SECRET", "h.example/SECRET", "http://h:0/SECRET"])
def test_only_http_and_https_urls_with_a_host_are_accepted_and_errors_do_not_show_them(tmp_path, url):
    with pytest.raises(ConfigError, match="http:// or https://") as e:
        config(tmp_path, f'[[webhooks]]\nurl = "{url}"\n')
    assert "SECRET" not in str(e.value)


def test_a_url_given_twice_is_refused(tmp_path):
    hook = '[[webhooks]]\nurl = "http://127.0.0.1:9/SECRET"\n'
    with pytest.raises(ConfigError, match="same url") as e:
        config(tmp_path, hook + hook)
    assert "SECRET" not in str(e.value)


def test_a_webhook_secret_is_a_whsec_key_of_enough_bytes_and_never_shown(tmp_path):
    key = base64.b64encode(b"S" * 32).decode()
    c = config(tmp_path, f'[[webhooks]]\nurl = "http://h.example/"\nsecret = "whsec_{key}"\n')
    assert webhook_key(c.webhooks[0].secret.get_secret_value()) == b"S" * 32
    assert key not in repr(c)
    short = base64.b64encode(b"S" * 8).decode()
    for bad, why in ((key, "whsec_"), (f"whsec_{short}", "at least 24"), ("whsec_%%%SSSS", "whsec_")):
        with pytest.raises(ConfigError, match=why) as e:
            config(tmp_path, f'[[webhooks]]\nurl = "http://h.example/"\nsecret = "{bad}"\n')
        assert "SSSS" not in str(e.value)
