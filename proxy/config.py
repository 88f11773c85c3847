"""Configuration: ``config.yaml`` → validated, frozen dataclasses.

Values may reference the environment as ``${VAR}`` or ``${VAR:-default}``; substitution happens after YAML
parsing, so a secret with YAML-special characters cannot break the file. Every problem found is reported at
once, each naming its key (``connectors[1].app_secret: ...``), and a bad config never starts the proxy.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
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

ROLES: tuple[Role, ...] = get_args(Role)
STORE_ERROR_POLICIES: tuple[StoreErrorPolicy, ...] = get_args(StoreErrorPolicy)
UNKNOWN_CONNECTOR_POLICIES: tuple[UnknownConnectorPolicy, ...] = get_args(UnknownConnectorPolicy)
UNKNOWN_WEBHOOK_POLICIES: tuple[UnknownWebhookPolicy, ...] = get_args(UnknownWebhookPolicy)
APPENDFSYNC_MODES: tuple[AppendFsync, ...] = get_args(AppendFsync)
STORE_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")

_Choice = TypeVar("_Choice", bound=str)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PNID = re.compile(r"^[0-9]{5,32}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    idle_timeout_seconds: float = 75.0
    """A connection that sends no complete request for this long is closed (idle keep-alive, slow headers)."""
    body_timeout_seconds: float = 30.0
    """Time allowed to receive a body the proxy reads itself (webhooks, admin API, inspected sends), and the longest
    pause between two pieces of a streamed upload."""


@dataclass(frozen=True)
class GraphConfig:
    base_url: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class StoreConfig:
    redis_url: str = ""
    data_dir: str = "./data"
    appendfsync: AppendFsync = "always"
    timeout_seconds: float = 2.0
    local_cache: bool = True

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set and the proxy runs its own Redis in ``data_dir``."""
        return not self.redis_url


@dataclass(frozen=True)
class AdminToken:
    name: str
    token: str = field(repr=False)
    role: Role = "viewer"


@dataclass(frozen=True)
class PersonRole:
    """A role given to people signed in by an authenticating reverse proxy, by e-mail address or by group."""

    role: Role
    email: str = ""
    group: str = ""


@dataclass(frozen=True)
class ProxyAuthConfig:
    """Identity headers set by an authenticating reverse proxy (oauth2-proxy's ``X-Auth-Request-*`` conventions).

    Trusted only on connections from ``trusted_addresses`` (IP addresses or networks); off while that is empty.
    """

    trusted_addresses: tuple[str, ...] = ()
    email_header: str = "X-Auth-Request-Email"
    groups_header: str = "X-Auth-Request-Groups"
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
    uploads_total: int = 200
    """Streamed pass-through uploads at once, in all (kept well under the upstream pool of 1,000: sends always find
    a connection); one more is refused with 429."""
    uploads_per_client: int = 20
    """Streamed uploads at once from one client address."""
    upload_min_bytes: int = 16 * 1024
    """A streamed upload must bring at least this many bytes in every ``upload_pace_seconds`` window, or it is cut
    with 408 (a trickle that keeps just under the pause bound)."""
    upload_pace_seconds: float = 10.0


@dataclass(frozen=True)
class WebhookConfig:
    forward_timeout_seconds: float = 10.0
    max_body_bytes: int = 3 * 1024 * 1024
    unknown_connectors: UnknownWebhookPolicy = "refuse"
    account_events_to: str = ""
    """Where account-level events (no phone number ID) of a WABA no connector names go; "" for nowhere."""
    deduplicate_replays: bool = True
    """Forward a signed body once per window: a replay (or Meta's duplicate delivery) is acknowledged, not forwarded."""
    replay_window_seconds: int = 3600


@dataclass(frozen=True)
class ConnectorConfig:
    phone_number_id: str
    name: str
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)
    forward_webhooks_to: str
    display_number: str = ""
    default_country: str = ""
    access_token: str = field(default="", repr=False)
    sync_to_meta: bool = False
    allow_encrypted_messages: bool = False
    on_store_error: StoreErrorPolicy = "deny"
    require_signature: bool = True
    waba_id: str = ""
    """The WhatsApp Business Account the number belongs to: account-level webhook events of it go to this connector's
    contact center."""
    optout_keywords: tuple[str, ...] = DEFAULT_OPTOUT_KEYWORDS
    """Whole messages that opt a user out of template and marketing sends (issue 19); () turns keywords off."""
    optin_keywords: tuple[str, ...] = DEFAULT_OPTIN_KEYWORDS
    """Whole messages that opt a user back in."""
    flood_max_messages: int = 0
    """Flood protection: more than this many messages from one user in ``flood_window_seconds`` puts a temporary
    block on them (0: off)."""
    flood_window_seconds: int = 60
    flood_block_seconds: int = 3600
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
    source: str = "<memory>"

    _by_pnid: dict[str, ConnectorConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_pnid", {c.phone_number_id: c for c in self.connectors})

    def connector(self, phone_number_id: str) -> ConnectorConfig | None:
        """Return the connector with this phone number ID, or None."""
        return self._by_pnid.get(phone_number_id)


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
    """Validate an already-parsed config mapping (see :func:`load_config`)."""
    if data is None:
        data = {}
    v = _Validator(os.environ if env is None else env, require_secrets)
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of sections"])
    v.known_keys("", data, ("server", "graph", "store", "admin", "gateway", "webhooks", "reload", "connectors"))

    server = v.section("server", data)
    graph = v.section("graph", data)
    store = v.section("store", data)
    admin = v.section("admin", data)
    gateway = v.section("gateway", data)
    webhooks = v.section("webhooks", data)
    reload = v.section("reload", data)
    v.known_keys("server", server, keys_of(ServerConfig))
    v.known_keys("graph", graph, keys_of(GraphConfig))
    v.known_keys("store", store, keys_of(StoreConfig))
    v.known_keys("admin", admin, keys_of(AdminConfig))
    v.known_keys("reload", reload, keys_of(ReloadConfig))
    v.known_keys(
        "gateway",
        gateway,
        keys_of(GatewayConfig),
    )
    v.known_keys(
        "webhooks",
        webhooks,
        keys_of(WebhookConfig),
    )

    server_cfg = ServerConfig(
        host=v.string("server.host", server.get("host"), default="127.0.0.1", allow_empty=False),
        port=v.integer("server.port", server.get("port"), default=8080, low=0, high=65535),
        idle_timeout_seconds=v.number("server.idle_timeout_seconds", server.get("idle_timeout_seconds"), 75.0),
        body_timeout_seconds=v.number("server.body_timeout_seconds", server.get("body_timeout_seconds"), 30.0),
    )
    graph_cfg = GraphConfig(
        base_url=v.url("graph.base_url", graph.get("base_url"), default="https://graph.facebook.com"),
        api_version=v.pattern(
            "graph.api_version", graph.get("api_version"), r"^v[0-9]+\.[0-9]+$", "like v21.0", default="v21.0"
        ),
        timeout_seconds=v.number("graph.timeout_seconds", graph.get("timeout_seconds"), default=30.0),
    )
    redis_url = v.string("store.redis_url", store.get("redis_url"), default="")
    if redis_url and urlsplit(redis_url).scheme not in STORE_SCHEMES:
        v.problem(
            "store.redis_url",
            "not a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL"
            f" (scheme {urlsplit(redis_url).scheme!r})",
        )
    data_dir = v.string("store.data_dir", store.get("data_dir"), default="./data", allow_empty=False)
    if base_dir is not None and data_dir and not os.path.isabs(data_dir):
        data_dir = str((base_dir / data_dir).resolve())
    store_cfg = StoreConfig(
        redis_url=redis_url,
        data_dir=data_dir,
        appendfsync=v.choice("store.appendfsync", store.get("appendfsync"), APPENDFSYNC_MODES, "always"),
        timeout_seconds=v.number("store.timeout_seconds", store.get("timeout_seconds"), default=2.0),
        local_cache=v.boolean("store.local_cache", store.get("local_cache"), default=True),
    )
    metrics_token = v.string("admin.metrics_token", admin.get("metrics_token"), default="")
    if metrics_token and len(metrics_token) < 12:
        v.problem("admin.metrics_token", "too short (at least 12 characters)")
    admin_cfg = AdminConfig(
        tokens=tuple(_tokens(v, admin.get("tokens"))),
        metrics_token=metrics_token,
        proxy_auth=_proxy_auth(v, admin.get("proxy_auth")),
    )
    reload_cfg = ReloadConfig(
        allow_no_connectors=v.boolean("reload.allow_no_connectors", reload.get("allow_no_connectors"), False),
        allow_replacing_all_connectors=v.boolean(
            "reload.allow_replacing_all_connectors", reload.get("allow_replacing_all_connectors"), False
        ),
    )
    gateway_cfg = GatewayConfig(
        unknown_connectors=v.choice(
            "gateway.unknown_connectors", gateway.get("unknown_connectors"), UNKNOWN_CONNECTOR_POLICIES, "refuse"
        ),
        enforce=v.boolean("gateway.enforce", gateway.get("enforce"), default=True),
        allow=_gateway_allow(v, gateway.get("allow")),
        block_users_unblock=v.choice(
            "gateway.block_users_unblock", gateway.get("block_users_unblock"), get_args(BlockUsersUnblock), "refuse"
        ),
        unknown_references=v.choice(
            "gateway.unknown_references", gateway.get("unknown_references"), get_args(UnknownReferences), "refuse"
        ),
        uploads_total=v.integer("gateway.uploads_total", gateway.get("uploads_total"), 200, low=1, high=900),
        uploads_per_client=v.integer(
            "gateway.uploads_per_client", gateway.get("uploads_per_client"), 20, low=1, high=900
        ),
        upload_min_bytes=v.integer(
            "gateway.upload_min_bytes", gateway.get("upload_min_bytes"), 16 * 1024, low=0, high=1 << 30
        ),
        upload_pace_seconds=v.number("gateway.upload_pace_seconds", gateway.get("upload_pace_seconds"), 10.0),
    )
    webhooks_cfg = WebhookConfig(
        forward_timeout_seconds=v.number(
            "webhooks.forward_timeout_seconds", webhooks.get("forward_timeout_seconds"), default=10.0
        ),
        max_body_bytes=v.integer(
            "webhooks.max_body_bytes", webhooks.get("max_body_bytes"), default=3 * 1024 * 1024, low=1024, high=1 << 30
        ),
        unknown_connectors=v.choice(
            "webhooks.unknown_connectors", webhooks.get("unknown_connectors"), UNKNOWN_WEBHOOK_POLICIES, "refuse"
        ),
        account_events_to=(
            v.url("webhooks.account_events_to", webhooks.get("account_events_to"))
            if webhooks.get("account_events_to") not in (None, "")
            else ""
        ),
        deduplicate_replays=v.boolean("webhooks.deduplicate_replays", webhooks.get("deduplicate_replays"), True),
        replay_window_seconds=v.integer(
            "webhooks.replay_window_seconds", webhooks.get("replay_window_seconds"), 3600, low=60, high=7 * 24 * 3600
        ),
    )
    connectors = tuple(_connectors(v, data.get("connectors")))
    if v.problems:
        raise ConfigError(v.problems)
    return Config(
        server=server_cfg,
        graph=graph_cfg,
        store=store_cfg,
        admin=admin_cfg,
        gateway=gateway_cfg,
        webhooks=webhooks_cfg,
        connectors=connectors,
        reload=reload_cfg,
        source=source,
    )


def _tokens(v: _Validator, raw: Any) -> list[AdminToken]:
    tokens: list[AdminToken] = []
    seen_names: dict[str, int] = {}
    seen_tokens: dict[str, int] = {}
    for i, item in enumerate(v.listing("admin.tokens", raw, "{name, token, role}")):
        key = f"admin.tokens[{i}]"
        if not isinstance(item, dict):
            v.problem(key, "must be a mapping with name, token and role")
            continue
        v.known_keys(key, item, keys_of(AdminToken))
        name = v.string(f"{key}.name", item.get("name"), allow_empty=False)
        token = v.secret(f"{key}.token", item.get("token"))
        role = v.choice(f"{key}.role", item.get("role"), ROLES, "viewer")
        if name in seen_names:
            v.problem(f"{key}.name", f"duplicate of admin.tokens[{seen_names[name]}].name ({name!r})")
        seen_names.setdefault(name, i)
        if token and token in seen_tokens:
            v.problem(f"{key}.token", f"same token as admin.tokens[{seen_tokens[token]}]")
        if token:
            seen_tokens.setdefault(token, i)
        if token and len(token) < 12:
            v.problem(f"{key}.token", "too short (at least 12 characters)")
        tokens.append(AdminToken(name=name, token=token, role=role))
    return tokens


def _proxy_auth(v: _Validator, raw: Any) -> ProxyAuthConfig:
    if raw is None:
        return ProxyAuthConfig()
    if not isinstance(raw, dict):
        v.problem("admin.proxy_auth", "must be a mapping with trusted_addresses and roles")
        return ProxyAuthConfig()
    v.known_keys("admin.proxy_auth", raw, keys_of(ProxyAuthConfig))
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
    for i, item in enumerate(v.listing("admin.proxy_auth.roles", raw.get("roles") or [], "{email or group, role}")):
        key = f"admin.proxy_auth.roles[{i}]"
        if not isinstance(item, dict):
            v.problem(key, "must be a mapping with email or group, and role")
            continue
        v.known_keys(key, item, keys_of(PersonRole))
        email = v.string(f"{key}.email", item.get("email"), default="").lower()
        group = v.string(f"{key}.group", item.get("group"), default="")
        if bool(email) == bool(group):
            v.problem(key, "needs exactly one of email or group")
        role = v.choice(f"{key}.role", item.get("role"), ROLES, "viewer")
        roles.append(PersonRole(role=role, email=email, group=group))
    return ProxyAuthConfig(
        trusted_addresses=tuple(addresses),
        email_header=v.string(
            "admin.proxy_auth.email_header", raw.get("email_header"), default="X-Auth-Request-Email", allow_empty=False
        ),
        groups_header=v.string(
            "admin.proxy_auth.groups_header",
            raw.get("groups_header"),
            default="X-Auth-Request-Groups",
            allow_empty=False,
        ),
        roles=tuple(roles),
    )


def _connectors(v: _Validator, raw: Any) -> list[ConnectorConfig]:
    connectors: list[ConnectorConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(v.listing("connectors", raw, "connectors")):
        key = f"connectors[{i}]"
        if not isinstance(item, dict):
            v.problem(key, "must be a mapping")
            continue
        v.known_keys(
            key,
            item,
            keys_of(ConnectorConfig),
        )
        raw_pnid = item.get("phone_number_id")
        if isinstance(raw_pnid, int) and not isinstance(raw_pnid, bool):
            raw_pnid = str(raw_pnid)
        pnid = v.string(f"{key}.phone_number_id", raw_pnid, allow_empty=False)
        if pnid and not _PNID.match(pnid):
            v.problem(f"{key}.phone_number_id", f"{pnid!r} is not a phone number ID (digits only)")
        if pnid in seen:
            v.problem(f"{key}.phone_number_id", f"duplicate connector: same as connectors[{seen[pnid]}] ({pnid})")
        if pnid:
            seen.setdefault(pnid, i)
        country = v.string(f"{key}.default_country", item.get("default_country"), default="").upper()
        if country and (not _COUNTRY.match(country) or country not in identity.REGIONS):
            v.problem(f"{key}.default_country", f"{country!r} is not a two-letter region code such as CO or BR")
        display_number = v.string(f"{key}.display_number", item.get("display_number"), default="")
        if display_number:
            try:
                identity.region_of(display_number)
            except InvalidNumber as exc:
                v.problem(f"{key}.display_number", str(exc))
        access_token = v.string(f"{key}.access_token", item.get("access_token"), default="")
        sync = v.boolean(f"{key}.sync_to_meta", item.get("sync_to_meta"), default=False)
        if sync and not access_token:
            v.problem(
                f"{key}.access_token",
                "empty, but sync_to_meta is on and needs it" + v.unset_hint(f"{key}.access_token"),
            )
        connectors.append(
            ConnectorConfig(
                phone_number_id=pnid,
                name=v.string(f"{key}.name", item.get("name"), default=pnid, allow_empty=False),
                display_number=display_number,
                default_country=country,
                app_secret=v.secret(f"{key}.app_secret", item.get("app_secret")),
                verify_token=v.secret(f"{key}.verify_token", item.get("verify_token")),
                forward_webhooks_to=v.url(f"{key}.forward_webhooks_to", item.get("forward_webhooks_to")),
                access_token=access_token,
                sync_to_meta=sync,
                allow_encrypted_messages=v.boolean(
                    f"{key}.allow_encrypted_messages", item.get("allow_encrypted_messages"), default=False
                ),
                on_store_error=v.choice(
                    f"{key}.on_store_error", item.get("on_store_error"), STORE_ERROR_POLICIES, "deny"
                ),
                require_signature=v.boolean(f"{key}.require_signature", item.get("require_signature"), default=True),
                waba_id=_waba_id(v, f"{key}.waba_id", item.get("waba_id")),
                optout_keywords=_keywords(v, f"{key}.optout_keywords", item, DEFAULT_OPTOUT_KEYWORDS),
                optin_keywords=_keywords(v, f"{key}.optin_keywords", item, DEFAULT_OPTIN_KEYWORDS),
                flood_max_messages=v.integer(
                    f"{key}.flood_max_messages", item.get("flood_max_messages"), 0, 0, 100_000
                ),
                flood_window_seconds=v.integer(
                    f"{key}.flood_window_seconds", item.get("flood_window_seconds"), 60, 1, 86_400
                ),
                flood_block_seconds=v.integer(
                    f"{key}.flood_block_seconds", item.get("flood_block_seconds"), 3600, 1, 366 * 86_400
                ),
            )
        )
    return connectors


def _keywords(v: _Validator, key: str, item: dict[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of opt-out / opt-in keywords (absent: the defaults; an empty list: none)."""
    name = key.rsplit(".", 1)[1]
    if name not in item or item[name] is None:
        return default
    raw = item[name]
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


def _waba_id(v: _Validator, key: str, raw: Any) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    text = v.string(key, raw, default="")
    if text and not _PNID.match(text):
        v.problem(key, f"{text!r} is not a WhatsApp Business Account ID (digits only)")
    return text


def keys_of(section: type) -> tuple[str, ...]:
    """The keys a config section accepts: its dataclass's fields, so that the two cannot drift apart."""
    return tuple(f.name for f in fields(section))


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
        return text.rstrip("/") if key == "graph.base_url" else text

    def pattern(self, key: str, value: Any, regex: str, hint: str, default: str) -> str:
        text = self.string(key, value, default=default, allow_empty=False)
        if text and not re.match(regex, text):
            self.problem(key, f"{text!r} is not valid ({hint})")
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
