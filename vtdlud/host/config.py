"""Read the policy files: the operator's /etc, never the host root being audited."""

from __future__ import annotations

import os

from vtdlud.host.files import pure_path, read_regular
from vtdlud.host.limits import CONFIG_CAP
from vtdlud.host.root import describe_oserror
from vtdlud.model.policy import Policy
from vtdlud.parse.policy import PolicyError, parse_policy

DEFAULT_CONFIG = "/etc/vtdlud/vtdlud.toml"
DEFAULT_CONFIG_DIR = "/etc/vtdlud/vtdlud.conf.d"


def _read(path: str) -> tuple[str, str]:
    try:
        return str(path), read_regular(path, CONFIG_CAP, allow_null=True).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start:#x})") from exc
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {describe_oserror(exc)}") from exc


def load_policy(config: str | None = None) -> Policy:
    """``--config FILE`` alone, or the default file (if present) plus ``vtdlud.conf.d/*.toml``."""
    if config is not None:
        return parse_policy([_read(pure_path(config))])
    files = []
    if os.path.exists(DEFAULT_CONFIG):
        files.append(_read(DEFAULT_CONFIG))
    if os.path.isdir(DEFAULT_CONFIG_DIR):  # *.toml, as Path.glob matches it (dotfiles too)
        names = sorted(n for n in os.listdir(DEFAULT_CONFIG_DIR) if n.endswith(".toml"))
        files += [_read(f"{DEFAULT_CONFIG_DIR}/{n}") for n in names]
    return parse_policy(files)
