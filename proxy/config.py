"""Configuration: ``config.yaml`` → validated, frozen dataclasses.

Values may reference the environment as ``${VAR}`` or ``${VAR:-default}``; substitution happens after YAML
parsing, so a secret with YAML-special characters cannot break the file. Every problem found is reported at
once, each naming its key (``connectors[1].app_secret: ...``), and a bad config never starts the proxy.

The dataclasses below are the one statement of every setting: its key is the field's name, its default the
field's default, its kind the field's type (``bool``, ``int``, ``float``, ``str`` or a ``Literal`` of choices),
and its rules the markers of an ``Annotated`` type (:class:`Between`, :class:`NonEmpty`, :class:`Url`...). The
parser reads a section field by field from them (:func:`settings_of`), so a new plain setting is one line in
its dataclass; only settings with a shape of their own (lists, nested mappings) or checks across settings are
read by hand in :func:`parse_config`.

The running proxy holds its config in one :class:`LiveConfig`, which every face reads per request and a reload
replaces (:mod:`wa_blocklist.proxy.run.reload`).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import yaml

from .base.errors import ConfigError, InvalidNumber
from .graph import identity
from .graph.classify import Surface, compile_surface
from .graph.optout import DEFAULT_OPTIN_KEYWORDS, DEFAULT_OPTOUT_KEYWORDS, MAX_KEYWORD, KeywordMatcher, normalise

Role = Literal["viewer", "admin"]
StoreErrorPolicy = Literal["deny", "allow"]
"""A connector's ``on_store_error``: refuse sends while the store is down, or let them through unchecked."""
UnknownConnectorPolicy = Literal["pass", "refuse"]
UnknownWebhookPolicy = Literal["refuse", "drop"]
AppendFsync = Literal["always", "everysec"]
BlockUsersUnblock = Literal["refuse", "allow"]
UnknownReferences = Literal["refuse", "pass"]

STORE_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")

_Choice = TypeVar("_Choice", bound=str)
_Section = TypeVar("_Section")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ID = r"^[0-9]{5,32}$"
"""Phone number IDs and WhatsApp Business Account IDs (YAML may write them as numbers: read as their digits)."""
_COUNTRY = re.compile(r"^[A-Z]{2}$")


# --- rules a setting's Annotated type may carry ---------------------------------------------------------------


class NonEmpty:
    """A text setting that may not be empty."""


class Secret:
    """A secret: must be present, and (when secrets are required) not empty."""


class Url:
    """An http(s) URL; ``""`` stays allowed when it is the setting's default (meaning "none")."""


class Between(NamedTuple):
    """The inclusive bounds of a whole-number setting (every ``int`` setting states them)."""

    low: int
    high: int


class Pattern(NamedTuple):
    """A text setting that must match ``regex``, or the problem reads ``'<value>' <problem>``."""

    regex: str
    problem: str


NOT_A_SETTING = {"setting": False}
"""Field metadata of a dataclass field that is not a key of the file (``Config.source``)."""


# --- the settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    host: Annotated[str, NonEmpty] = "127.0.0.1"
    port: Annotated[int, Between(0, 65535)] = 8080
    idle_timeout_seconds: float = 75.0
    """A connection that sends no complete request for this long is closed (idle keep-alive, slow headers)."""
    body_timeout_seconds: float = 30.0
    """Time allowed to receive a body the proxy reads itself (webhooks, admin API, inspected sends), and the longest
    pause between two pieces of a streamed upload."""
    allow_development_secrets: bool = False
    """Serve on an address other than the loopback with dev.env's public tokens and secrets (a throwaway machine)."""


@dataclass(frozen=True)
class GraphConfig:
    base_url: Annotated[str, Url] = "https://graph.facebook.com"
    api_version: Annotated[str, NonEmpty, Pattern(r"^v[0-9]+\.[0-9]+$", "is not valid (like v21.0)")] = "v21.0"
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class StoreConfig:
    redis_url: str = ""
    data_dir: Annotated[str, NonEmpty] = "./data"
    appendfsync: AppendFsync = "always"
    timeout_seconds: float = 2.0
    local_cache: bool = True

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set and the proxy runs its own Redis in ``data_dir``."""
        return not self.redis_url


@dataclass(frozen=True)
class AdminToken:
    name: Annotated[str, NonEmpty]
    token: Annotated[str, Secret] = field(repr=False)
    role: Role = "viewer"


@dataclass(frozen=True)
class PersonRole:
    """A role given to people signed in by an authenticating reverse proxy, by e-mail address or by group."""

    email: str = ""
    group: str = ""
    role: Role = "viewer"


@dataclass(frozen=True)
class ProxyAuthConfig:
    """Identity headers set by an authenticating reverse proxy (oauth2-proxy's ``X-Auth-Request-*`` conventions).

    Trusted only on connections from ``trusted_addresses`` (IP addresses or networks); off while that is empty.
    """

    trusted_addresses: tuple[str, ...] = ()
    email_header: Annotated[str, NonEmpty] = "X-Auth-Request-Email"
    groups_header: Annotated[str, NonEmpty] = "X-Auth-Request-Groups"
    roles: tuple[PersonRole, ...] = ()


@dataclass(frozen=True)
class AdminConfig:
    tokens: tuple[AdminToken, ...] = ()
    metrics_token: str = field(default="", repr=False)
    """When set, ``GET /metrics`` needs ``Authorization: Bearer <metrics_token>``."""
    proxy_auth: ProxyAuthConfig = field(default_factory=ProxyAuthConfig)


@dataclass(frozen=True)
class ReloadConfig:
    """Guards against a config that would switch enforcement off (see :mod:`wa_blocklist.proxy.run.reload`)."""

    allow_no_connectors: bool = False
    """A config with no connectors is accepted (check-config, serve, reload): every send is then unchecked."""
    allow_replacing_all_connectors: bool = False
    """A reload may drop every connector of the running config (moving to entirely new numbers)."""


@dataclass(frozen=True)
class GatewayConfig:
    unknown_connectors: UnknownConnectorPolicy = "refuse"
    """``refuse`` (403) or ``pass``: sends and block_users for phone number IDs that are not connectors."""
    enforce: bool = True
    allow: tuple[Surface, ...] = ()
    """Harmless Graph surfaces the operator adds to the built-in allow-list (``{method, path}`` patterns)."""
    block_users_unblock: BlockUsersUnblock = "refuse"
    """``refuse``: a block made by a supervisor cannot be lifted through the Graph face; ``allow``: it can."""
    unknown_references: UnknownReferences = "refuse"
    """``refuse`` or ``pass``: read receipts on message IDs and join-request approvals the proxy has not seen."""
    uploads_total: Annotated[int, Between(1, 900)] = 200
    """Streamed pass-through uploads at once, in all (kept well under the upstream pool of 1,000: sends always find
    a connection); one more is refused with 429."""
    uploads_per_client: Annotated[int, Between(1, 900)] = 20
    """Streamed uploads at once from one client address."""
    upload_min_bytes: Annotated[int, Between(0, 1 << 30)] = 16 * 1024
    """A streamed upload must bring at least this many bytes in every ``upload_pace_seconds`` window, or it is cut
    with 408 (a trickle that keeps just under the pause bound)."""
    upload_pace_seconds: float = 10.0


@dataclass(frozen=True)
class WebhookConfig:
    forward_timeout_seconds: float = 10.0
    max_body_bytes: Annotated[int, Between(1024, 1 << 30)] = 3 * 1024 * 1024
    unknown_connectors: UnknownWebhookPolicy = "refuse"
    account_events_to: Annotated[str, Url] = ""
    """Where account-level events (no phone number ID) of a WABA no connector names go; "" for nowhere."""
    deduplicate_replays: bool = True
    """Forward a signed body once per window: a replay (or Meta's duplicate delivery) is acknowledged, not forwarded."""
    replay_window_seconds: Annotated[int, Between(60, 7 * 24 * 3600)] = 3600


@dataclass(frozen=True)
class ConnectorConfig:
    phone_number_id: Annotated[str, NonEmpty, Pattern(_ID, "is not a phone number ID (digits only)")]
    name: Annotated[str, NonEmpty]
    """Shown in the admin page and logs; the file may leave it out (then it is the phone number ID)."""
    app_secret: Annotated[str, Secret] = field(repr=False)
    verify_token: Annotated[str, Secret] = field(repr=False)
    forward_webhooks_to: Annotated[str, Url]
    display_number: str = ""
    default_country: str = ""
    access_token: str = field(default="", repr=False)
    sync_to_meta: bool = False
    allow_encrypted_messages: bool = False
    on_store_error: StoreErrorPolicy = "deny"
    require_signature: bool = True
    waba_id: Annotated[str, Pattern(_ID, "is not a WhatsApp Business Account ID (digits only)")] = ""
    """The WhatsApp Business Account the number belongs to: account-level webhook events of it go to this connector's
    contact center."""
    optout_keywords: tuple[str, ...] = DEFAULT_OPTOUT_KEYWORDS
    """Whole messages that opt a user out of template and marketing sends (issue 19); () turns keywords off."""
    optin_keywords: tuple[str, ...] = DEFAULT_OPTIN_KEYWORDS
    """Whole messages that opt a user back in."""
    flood_max_messages: Annotated[int, Between(0, 100_000)] = 0
    """Flood protection: more than this many messages from one user in ``flood_window_seconds`` puts a temporary
    block on them (0: off)."""
    flood_window_seconds: Annotated[int, Between(1, 86_400)] = 60
    flood_block_seconds: Annotated[int, Between(1, 366 * 86_400)] = 3600
    """How long an automatic flood block lasts."""

    @cached_property
    def keywords(self) -> KeywordMatcher:
        """The opt-out / opt-in keywords, normalised once."""
        return KeywordMatcher(self.optout_keywords, self.optin_keywords)

    @cached_property
    def region(self) -> str:
        """The connector's ISO region for national numbers (sends, typed blocks, CSV rows without a country code).

        ``default_country`` when set, otherwise the region of ``display_number``, otherwise "" (no national
        numbers accepted). A loaded config has a readable ``display_number``; one built in code that has not
        counts as having none.
        """
        if self.default_country:
            return self.default_country
        if not self.display_number:
            return ""
        try:
            return identity.region_of(self.display_number)
        except InvalidNumber:
            return ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    graph: GraphConfig
    store: StoreConfig
    admin: AdminConfig
    gateway: GatewayConfig
    webhooks: WebhookConfig
    connectors: tuple[ConnectorConfig, ...]
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    source: str = field(default="<memory>", metadata=NOT_A_SETTING)

    _by_pnid: dict[str, ConnectorConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_pnid", {c.phone_number_id: c for c in self.connectors})

    def connector(self, phone_number_id: str) -> ConnectorConfig | None:
        """Return the connector with this phone number ID, or None."""
        return self._by_pnid.get(phone_number_id)


class LiveConfig:
    """The running config: the one reference every face reads per request, and that a reload replaces.

    The application holds one (``app[CONFIG]``, created by ``create_app``) and hands it to the blocklist service and
    the Meta sync; :func:`wa_blocklist.proxy.run.reload.apply_config` sets :attr:`current`, the only place a running
    proxy's config changes. Read ``current`` once per request and keep that value for the request, so one request
    never mixes two configs.
    """

    __slots__ = ("current",)

    def __init__(self, config: Config) -> None:
        self.current = config


def live(config: Config | LiveConfig) -> LiveConfig:
    """``config`` itself when it is a :class:`LiveConfig`, else a new one holding it (CLI, plugins, tests)."""
    return config if isinstance(config, LiveConfig) else LiveConfig(config)


def connector_problems(new: Config, running: Config | None = None) -> list[str]:
    """Why ``new`` must not be applied (or started, or passed by ``check-config``); empty when it may.

    Args:
        new: the config about to be used.
        running: the config it would replace (a reload), or None (start-up, check-config).
    """
    if not new.connectors:
        if new.reload.allow_no_connectors:
            return []
        return [
            "connectors: none configured, so no send would be checked; "
            "set reload.allow_no_connectors: true if that is really meant"
        ]
    if running is not None and running.connectors and not new.reload.allow_replacing_all_connectors:
        before = {c.phone_number_id for c in running.connectors}
        if not before & {c.phone_number_id for c in new.connectors}:
            return [
                f"connectors: none of the running connectors ({', '.join(sorted(before))}) is in the new file; "
                "set reload.allow_replacing_all_connectors: true to replace them all"
            ]
    return []


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, require_secrets: bool = True
) -> Config:
    """Read, substitute and validate a YAML config file.

    Args:
        path: the YAML file.
        env: the environment to substitute from (default: ``os.environ``).
        require_secrets: False lets secrets (admin tokens, app secrets, verify tokens) be empty, for CLI commands
            that only use the store; a config loaded so must never serve.

    Raises:
        ConfigError: listing every problem, each naming its key.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}: not valid YAML ({exc})"]) from None
    return parse_config(
        data, env=env, base_dir=file.resolve().parent, source=str(file), require_secrets=require_secrets
    )


def parse_config(
    data: Any,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source: str = "<memory>",
    require_secrets: bool = True,
) -> Config:
    """Validate an already-parsed config mapping (see :func:`load_config`).

    Each section is read from its dataclass (:func:`read_section`); what follows each read is only what its
    fields cannot say: lists, nested mappings and checks across settings.
    """
    if data is None:
        data = {}
    v = _Validator(os.environ if env is None else env, require_secrets)
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of sections"])
    v.known_keys("", data, keys_of(Config))

    server = read_section(v, "server", ServerConfig, v.section("server", data))
    graph = read_section(v, "graph", GraphConfig, v.section("graph", data))
    graph["base_url"] = graph["base_url"].rstrip("/")
    store = read_section(v, "store", StoreConfig, v.section("store", data))
    scheme = urlsplit(store["redis_url"]).scheme
    if store["redis_url"] and scheme not in STORE_SCHEMES:
        v.problem(
            "store.redis_url",
            f"not a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL (scheme {scheme!r})",
        )
    if base_dir is not None and store["data_dir"] and not os.path.isabs(store["data_dir"]):
        store["data_dir"] = str((base_dir / store["data_dir"]).resolve())
    admin_raw = v.section("admin", data)
    admin = read_section(
        v,
        "admin",
        AdminConfig,
        admin_raw,
        tokens=_tokens(v, admin_raw.get("tokens")),
        proxy_auth=_proxy_auth(v, admin_raw.get("proxy_auth")),
    )
    if admin["metrics_token"] and len(admin["metrics_token"]) < 12:
        v.problem("admin.metrics_token", "too short (at least 12 characters)")
    gateway_raw = v.section("gateway", data)
    gateway = read_section(v, "gateway", GatewayConfig, gateway_raw, allow=_gateway_allow(v, gateway_raw.get("allow")))
    webhooks = read_section(v, "webhooks", WebhookConfig, v.section("webhooks", data))
    reload = read_section(v, "reload", ReloadConfig, v.section("reload", data))
    connectors = _connectors(v, data.get("connectors"))
    if v.problems:
        raise ConfigError(v.problems)
    return Config(
        server=ServerConfig(**server),
        graph=GraphConfig(**graph),
        store=StoreConfig(**store),
        admin=AdminConfig(**admin),
        gateway=GatewayConfig(**gateway),
        webhooks=WebhookConfig(**webhooks),
        connectors=connectors,
        reload=ReloadConfig(**reload),
        source=source,
    )


def _tokens(v: _Validator, raw: Any) -> tuple[AdminToken, ...]:
    tokens: list[AdminToken] = []
    seen_names: dict[str, int] = {}
    seen_tokens: dict[str, int] = {}
    for i, key, item in _mappings(v, "admin.tokens", raw, "{name, token, role}", " with name, token and role"):
        token = AdminToken(**read_section(v, key, AdminToken, item))
        if token.name in seen_names:
            v.problem(f"{key}.name", f"duplicate of admin.tokens[{seen_names[token.name]}].name ({token.name!r})")
        seen_names.setdefault(token.name, i)
        if token.token and token.token in seen_tokens:
            v.problem(f"{key}.token", f"same token as admin.tokens[{seen_tokens[token.token]}]")
        if token.token:
            seen_tokens.setdefault(token.token, i)
        if token.token and len(token.token) < 12:
            v.problem(f"{key}.token", "too short (at least 12 characters)")
        tokens.append(token)
    return tuple(tokens)


def _proxy_auth(v: _Validator, raw: Any) -> ProxyAuthConfig:
    if raw is None:
        return ProxyAuthConfig()
    if not isinstance(raw, dict):
        v.problem("admin.proxy_auth", "must be a mapping with trusted_addresses and roles")
        return ProxyAuthConfig()
    addresses: list[str] = []
    listed = v.listing(
        "admin.proxy_auth.trusted_addresses", raw.get("trusted_addresses") or [], "IP addresses or networks"
    )
    for i, item in enumerate(listed):
        text = v.string(f"admin.proxy_auth.trusted_addresses[{i}]", item, allow_empty=False)
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            v.problem(f"admin.proxy_auth.trusted_addresses[{i}]", f"{text!r} is not an IP address or network")
            continue
        addresses.append(text)
    roles: list[PersonRole] = []
    shape = " with email or group, and role"
    for _, key, item in _mappings(v, "admin.proxy_auth.roles", raw.get("roles") or [], "{email or group, role}", shape):
        role = read_section(v, key, PersonRole, item)
        role["email"] = role["email"].lower()
        if bool(role["email"]) == bool(role["group"]):
            v.problem(key, "needs exactly one of email or group")
        roles.append(PersonRole(**role))
    return ProxyAuthConfig(
        **read_section(
            v, "admin.proxy_auth", ProxyAuthConfig, raw, trusted_addresses=tuple(addresses), roles=tuple(roles)
        )
    )


def _connectors(v: _Validator, raw: Any) -> tuple[ConnectorConfig, ...]:
    connectors: list[ConnectorConfig] = []
    seen: dict[str, int] = {}
    for i, key, item in _mappings(v, "connectors", raw, "connectors", ""):
        pnid = v.setting(key, _setting(ConnectorConfig, "phone_number_id"), item)
        if pnid in seen:
            v.problem(f"{key}.phone_number_id", f"duplicate connector: same as connectors[{seen[pnid]}] ({pnid})")
        if pnid:
            seen.setdefault(pnid, i)
        found = read_section(
            v,
            key,
            ConnectorConfig,
            item,
            phone_number_id=pnid,
            name=v.string(f"{key}.name", item.get("name"), default=pnid, allow_empty=False),
            optout_keywords=_keywords(v, key, "optout_keywords", item),
            optin_keywords=_keywords(v, key, "optin_keywords", item),
        )
        country = found["default_country"] = found["default_country"].upper()
        if country and (not _COUNTRY.match(country) or country not in identity.REGIONS):
            v.problem(f"{key}.default_country", f"{country!r} is not a two-letter region code such as CO or BR")
        if found["display_number"]:
            try:
                identity.region_of(found["display_number"])
            except InvalidNumber as exc:
                v.problem(f"{key}.display_number", str(exc))
        if found["sync_to_meta"] and not found["access_token"]:
            v.problem(
                f"{key}.access_token",
                "empty, but sync_to_meta is on and needs it" + v.unset_hint(f"{key}.access_token"),
            )
        connectors.append(ConnectorConfig(**found))
    return tuple(connectors)


def _keywords(v: _Validator, where: str, name: str, item: dict[str, Any]) -> tuple[str, ...]:
    """A list of opt-out / opt-in keywords (absent: the defaults; an empty list: none)."""
    default: tuple[str, ...] = _setting(ConnectorConfig, name).default
    raw = item.get(name)
    if raw is None:
        return default
    key = f"{where}.{name}"
    if not isinstance(raw, list) or not all(isinstance(word, str) for word in raw):
        v.problem(key, "must be a list of words, e.g. [STOP, BAJA]")
        return default
    for word in raw:
        if not normalise(word) or len(word) > MAX_KEYWORD:
            v.problem(key, f"{word[:80]!r} is not a keyword (letters or digits, at most {MAX_KEYWORD} characters)")
    return tuple(raw)


def _gateway_allow(v: _Validator, raw: Any) -> tuple[Surface, ...]:
    """``gateway.allow``: ``[{method, path}]`` patterns added to the gateway's allow-list of harmless surfaces."""
    found: list[Surface] = []
    for i, item in enumerate(v.listing("gateway.allow", raw, "{method, path} entries")):
        key = f"gateway.allow[{i}]"
        if not isinstance(item, dict) or not {"method", "path"} <= set(item) <= {"method", "path", "stream"}:
            v.problem(key, "must be a mapping with method and path (and optionally stream)")
            continue
        methods = item["method"] if isinstance(item["method"], list) else [item["method"]]
        if not all(isinstance(m, str) for m in methods) or not isinstance(item["path"], str):
            v.problem(key, "method and path must be strings")
            continue
        try:
            found.append(
                compile_surface(
                    f"gateway.allow[{i}]", methods, item["path"], stream=item.get("stream") is True, why="operator"
                )
            )
        except ValueError as exc:
            v.problem(key, str(exc))
    return tuple(found)


def _mappings(v: _Validator, key: str, raw: Any, what: str, shape: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The entries of a list of mappings (``admin.tokens``, ``connectors``...): ``(index, key, mapping)`` each;
    an entry that is not a mapping is reported (``must be a mapping{shape}``) and skipped."""
    for i, item in enumerate(v.listing(key, raw, what)):
        if isinstance(item, dict):
            yield i, f"{key}[{i}]", item
        else:
            v.problem(f"{key}[{i}]", f"must be a mapping{shape}")


# --- settings read from their dataclass -----------------------------------------------------------------------


class Setting(NamedTuple):
    """One key of a config section, as its dataclass field states it."""

    name: str
    kind: Any
    """``bool``, ``int``, ``float``, ``str``, a ``Literal[...]`` of choices, or another type read by hand."""
    rules: tuple[Any, ...]
    """The markers of its ``Annotated`` type (:class:`Between`, :class:`NonEmpty`, :class:`Url`...)."""
    default: Any
    """The field's default (or its default factory's value); None when the file must give it."""


@functools.cache
def settings_of(section: type) -> tuple[Setting, ...]:
    """The settings of a config dataclass, in field order: its init fields, less those marked :data:`NOT_A_SETTING`."""
    hints = get_type_hints(section, include_extras=True)
    found: list[Setting] = []
    for f in fields(section):
        if not f.init or f.metadata.get("setting") is False:
            continue
        kind, rules = hints[f.name], ()
        if get_origin(kind) is Annotated:
            kind, *extra = get_args(kind)
            rules = tuple(extra)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = None
        found.append(Setting(f.name, kind, rules, default))
    return tuple(found)


def keys_of(section: type) -> tuple[str, ...]:
    """The keys a config section accepts: its dataclass's settings, so that the two cannot drift apart."""
    return tuple(s.name for s in settings_of(section))


def _setting(section: type, name: str) -> Setting:
    return next(s for s in settings_of(section) if s.name == name)


def read_section(v: _Validator, key: str, section: type, data: dict[str, Any], **given: Any) -> dict[str, Any]:
    """Read a mapping of the file as ``section`` states it: unknown keys reported, each setting read by its kind
    and rules (absent: its default), and the values in ``given`` (read by hand) taken as they are.

    Returns:
        The keyword arguments of ``section``.
    """
    v.known_keys(key, data, keys_of(section))
    return {s.name: given[s.name] if s.name in given else v.setting(key, s, data) for s in settings_of(section)}


class _Validator:
    """Collects problems instead of stopping at the first, and substitutes ``${VAR}`` references."""

    def __init__(self, env: Mapping[str, str], require_secrets: bool = True) -> None:
        self.env = env
        self.require_secrets = require_secrets
        self.problems: list[str] = []
        self._unset: dict[str, list[str]] = {}

    def problem(self, key: str, what: str) -> None:
        self.problems.append(f"{key}: {what}")

    def unset_hint(self, key: str) -> str:
        names = self._unset.get(key)
        if not names:
            return ""
        return f" (environment variable {', '.join(names)} is not set)"

    def section(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(name, "must be a mapping")
            return {}
        return value

    def listing(self, key: str, value: Any, what: str) -> list[Any]:
        """The items of a list setting: none when it is unset, none and a problem when it is not a list.

        Args:
            what: what the list holds, for the problem ("must be a list of {what}").
        """
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"must be a list of {what}")
            return []
        return value

    def known_keys(self, where: str, data: dict[str, Any], known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                prefix = f"{where}.{key}" if where else str(key)
                self.problem(prefix, f"unknown key (known keys here: {', '.join(known)})")

    def setting(self, where: str, setting: Setting, data: dict[str, Any]) -> Any:
        """The value of ``setting`` in the mapping ``data`` at ``where``, read by its kind and rules."""
        key, value, kind, default = f"{where}.{setting.name}", data.get(setting.name), setting.kind, setting.default
        if get_origin(kind) is Literal:
            return self.choice(key, value, get_args(kind), default)
        if kind is bool:
            return self.boolean(key, value, default)
        if kind is float:
            return self.number(key, value, default)
        if kind is int:
            bounds = next(rule for rule in setting.rules if isinstance(rule, Between))
            return self.integer(key, value, default, bounds.low, bounds.high)
        if kind is str:
            return self.text(key, value, default, setting.rules)
        raise TypeError(f"{key}: a {kind} setting is read by hand; pass its value to read_section")

    def text(self, key: str, value: Any, default: str | None, rules: tuple[Any, ...]) -> str:
        """A text setting under its rules (:class:`Secret`, :class:`Url`, :class:`NonEmpty`, :class:`Pattern`)."""
        if Secret in rules:
            return self.secret(key, value)
        if Url in rules:
            return "" if value == "" == default else self.url(key, value, default)
        text = self.string(key, value, default, allow_empty=NonEmpty not in rules)
        for rule in rules:
            if isinstance(rule, Pattern) and text and not re.match(rule.regex, text):
                self.problem(key, f"{text!r} {rule.problem}")
        return text

    def _substitute(self, key: str, value: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = self.env.get(name)
            if found:
                return found
            if default is not None:
                return default
            self._unset.setdefault(key, []).append(name)
            return ""

        return _ENV_REF.sub(replace, value)

    def string(self, key: str, value: Any, default: str | None = None, allow_empty: bool = True) -> str:
        if value is None:
            if default is None:
                self.problem(key, "missing")
                return ""
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problem(key, "must be a string")
            return ""
        text = self._substitute(key, str(value)).strip()
        if not text and not allow_empty:
            self.problem(key, "empty" + self.unset_hint(key))
        return text

    def secret(self, key: str, value: Any) -> str:
        if value is None:
            self.problem(key, "missing")
            return ""
        text = self.string(key, value)
        if not text and self.require_secrets:
            self.problem(key, "secret left empty" + self.unset_hint(key))
        return text

    def url(self, key: str, value: Any, default: str | None = None) -> str:
        text = self.string(key, value, default=default, allow_empty=False)
        if text:
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.problem(key, f"{text!r} is not an http(s) URL")
        return text

    def choice(self, key: str, value: Any, options: tuple[_Choice, ...], default: _Choice) -> _Choice:
        text = self.string(key, value, default=default)
        for option in options:
            if option == text:
                return option
        self.problem(key, f"{text!r} is not one of: {', '.join(options)}")
        return default

    def boolean(self, key: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            text = self._substitute(key, value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0", ""):
                return default if text == "" else False
        self.problem(key, f"{value!r} is not true or false")
        return default

    def number(self, key: str, value: Any, default: float) -> float:
        if value is None:
            return default
        try:
            result = float(self._substitute(key, value) if isinstance(value, str) else value)
        except (TypeError, ValueError):
            self.problem(key, f"{value!r} is not a number")
            return default
        if isinstance(value, bool) or not result > 0:
            self.problem(key, f"{value!r} must be a positive number")
            return default
        return result

    def integer(self, key: str, value: Any, default: int, low: int, high: int) -> int:
        if value is None:
            return default
        try:
            if isinstance(value, (bool, float)):
                raise ValueError
            result = int(self._substitute(key, value) if isinstance(value, str) else value)
        except (TypeError, ValueError):
            self.problem(key, f"{value!r} is not a whole number")
            return default
        if not low <= result <= high:
            self.problem(key, f"{result} is out of range ({low} to {high})")
            return default
        return result
