"""Read the policy files: the operator's /etc, never the host root being audited."""

from __future__ import annotations

from pathlib import Path

from vtdlud.audit.policy import (
    DEFAULT_CONFIG,
    DEFAULT_CONFIG_DIR,
    Policy,
    PolicyError,
    parse_policy,
)
from vtdlud.host.files import read_regular
from vtdlud.host.limits import CONFIG_CAP
from vtdlud.host.root import describe_oserror


def _read(path: Path) -> tuple[str, str]:
    try:
        return str(path), read_regular(path, CONFIG_CAP, allow_null=True).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 text (byte {exc.start:#x})") from exc
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {describe_oserror(exc)}") from exc


def load_policy(config: str | None = None) -> Policy:
    """``--config FILE`` alone, or the default file (if present) plus ``vtdlud.conf.d/*.toml``."""
    if config is not None:
        return parse_policy([_read(Path(config))])
    files = []
    main = Path(DEFAULT_CONFIG)
    if main.exists():
        files.append(_read(main))
    drop_ins = Path(DEFAULT_CONFIG_DIR)
    if drop_ins.is_dir():
        files += [_read(p) for p in sorted(drop_ins.glob("*.toml"))]
    return parse_policy(files)
