// The "Block Numbers" admin page of wa-blocklist-proxy: plain JavaScript, no build step, no other origin.
//
// Security model: the admin token lives in sessionStorage only (gone when the tab closes) and travels as an
// Authorization: Bearer header; the proxy sets no cookie, so no other site can make requests on our behalf.
// Everything that comes from the API (numbers, reasons, names) is written with textContent, never as HTML.

const TOKEN_KEY = "wa-blocklist.admin-token";
const LANG_KEY = "wa-blocklist.lang";
const PAGE_SIZE = 25;
const SEARCH_DELAY_MS = 250;
const CONNECTOR_PAGE = 20; // connectors shown at a time
const CONNECTOR_FILTER_FROM = 10; // more connectors than this (about a screenful) get a search field

const MESSAGES = {
  en: {
    pageTitle: "Block Numbers · WhatsApp blocklist",
    appName: "WhatsApp blocklist",
    skipToContent: "Skip to content",
    language: "Language",
    signIn: "Sign in",
    signInTitle: "Sign in",
    signInHint: "Enter the admin token you were given. It is kept only in this browser tab.",
    tokenLabel: "Admin token",
    tokenRequired: "Enter your admin token.",
    signingIn: "Signing in…",
    signOut: "Sign out",
    signedOut: "You have signed out.",
    signedInAs: "{name} · {role}",
    role_admin: "admin",
    role_viewer: "viewer (read-only)",
    sessionEnded: "Your session has ended: the token is no longer accepted. Sign in again.",
    connectorsTitle: "WhatsApp connectors",
    connectorsHint: "Choose a connector to see and manage its blocked numbers.",
    noConnectors: "No connectors are configured.",
    colName: "Name",
    colDisplayNumber: "Display number",
    colPhoneNumberId: "Phone number ID",
    colBlockedCount: "Blocked numbers",
    colActions: "Actions",
    blockButton: "Block numbers",
    blockButtonFor: "Block numbers of {name}",
    viewButton: "View blocked numbers",
    viewButtonFor: "Blocked numbers of {name}",
    blockNumbersTitle: "Block Numbers",
    connectorFilterLabel: "Find a connector",
    connectorFilterPlaceholder: "Name, number or ID",
    connectorsShowing: "Showing {n} of {total}",
    showMoreConnectors: "Show more",
    noConnectorMatches: "No connector matches “{q}”.",
    close: "Close",
    numberLabel: "Number",
    numberPlaceholder: "+57 300 123 4567",
    reasonLabel: "Reason (optional)",
    durationLabel: "Duration",
    durationPermanent: "Permanent",
    duration1d: "1 day",
    duration7d: "7 days",
    duration30d: "30 days",
    colExpires: "Expires",
    never: "Never",
    addNumber: "Add Number",
    addHint: "WhatsApp only allows blocking numbers that wrote to this connector in the last 24 hours.",
    everywhereLabel: "On all connectors",
    unsyncedLabel: "Also where it has not written (connectors that do not sync to Meta)",
    blockedEverywhere: "{number}: blocked on {blocked}.",
    notBlockedEverywhere: "Not blocked on {skipped}: it has not written there in the last 24 hours.",
    blockedNowhere: "{number} was not blocked anywhere.",
    alsoBlockedOn: "Also blocked on {connectors}",
    autoBlock: "automatic",
    optoutsTitle: "Opted out of templates and marketing",
    optoutsHint:
      "These users still write and get replies, but template and marketing messages to them are refused. A message such as STOP or BAJA adds them; START or ALTA removes them.",
    optoutNumberLabel: "Number to opt out",
    optOut: "Opt out",
    optIn: "Opt {number} back in",
    noOptouts: "Nobody has opted out on this connector.",
    optedOut: "{number} no longer gets templates or marketing messages.",
    alreadyOptedOut: "{number} had already opted out.",
    optedIn: "{number} gets templates and marketing messages again.",
    optoutSince: "since {date} · {reason} · {by}",
    error_not_opted_out_n: "{number} has not opted out on this connector.",
    error_not_opted_out: "That number has not opted out on this connector.",
    numberRequired: "Enter the number to block, with its country code.",
    readOnly: "Read-only: your token can see blocked numbers but not change them.",
    blockedNumbersTitle: "Blocked Numbers",
    searchLabel: "Search",
    searchPlaceholder: "Number, reason or name",
    colNumber: "Number",
    colBlockedAt: "Blocked on",
    colReason: "Reason",
    colBlockedBy: "Blocked by",
    colUnblock: "Unblock",
    unblockNumber: "Unblock {number}",
    noBlocks: "No numbers are blocked on this connector.",
    noMatches: "No blocked number matches “{q}”.",
    loading: "Loading…",
    showing: "Showing {n}",
    showingMore: "Showing {n} · more available",
    loadMore: "Load more",
    blocked: "{number} is now blocked.",
    alreadyBlocked: "{number} was already blocked ({date}).",
    alreadyBlockedReason: "{number} was already blocked ({date}) with the reason “{reason}”. Use the pencil to change it.",
    unblocked: "{number} is no longer blocked.",
    editBlock: "Change the block of {number}",
    editTitle: "Change block",
    expiryLabel: "Expires",
    keepExpiry: "Keep as it is",
    save: "Save",
    updated: "The block of {number} was changed.",
    alreadyUnblocked: "{number} was already unblocked.",
    confirmTitle: "Unblock this number?",
    confirmText: "{number} will be able to message {connector} again, and agents will be able to write to it.",
    cancel: "Cancel",
    unblock: "Unblock",
    none: "—",
    error_unauthorized: "The token was not accepted. Check it and sign in again.",
    error_forbidden: "Your token is read-only: it can see blocked numbers but not change them.",
    error_invalid_number: "That is not a valid phone number. Write it with its country code, e.g. +57 300 123 4567.",
    error_invalid_number_n: "{number} is not a valid phone number. Write it with its country code, e.g. +57 300 123 4567.",
    error_not_recently_active:
      "This number has not written to this connector in the last 24 hours, and WhatsApp only allows blocking numbers that wrote recently.",
    error_not_recently_active_n:
      "{number} has not written to this connector in the last 24 hours, and WhatsApp only allows blocking numbers that wrote recently.",
    error_not_blocked: "That number is not blocked on this connector.",
    error_not_blocked_n: "{number} is not blocked on this connector.",
    error_unknown_connector: "This connector is no longer configured in the proxy. Reload the page.",
    error_not_found: "The proxy does not know this address. Reload the page.",
    error_store_unavailable: "The blocklist store is unavailable, so nothing was changed. Try again in a moment.",
    error_bad_request: "The proxy did not accept the request. Check the number, the reason (at most 500 characters) and the duration.",
    error_body_too_large: "The request is too large for the proxy.",
    error_body_timeout: "The request took too long to reach the proxy. Try again.",
    error_too_many_attempts: "Too many wrong tokens were tried from this computer. Wait a few minutes and try again.",
    error_internal_error: "The proxy had an internal error. It has been logged; try again or tell the administrator.",
    error_network: "The proxy cannot be reached. Check the connection and try again.",
    error_generic: "The request failed (HTTP {status}). Try again or tell the administrator.",
  },
  es: {
    pageTitle: "Bloquear números · Lista de bloqueo de WhatsApp",
    appName: "Lista de bloqueo de WhatsApp",
    skipToContent: "Saltar al contenido",
    language: "Idioma",
    signIn: "Iniciar sesión",
    signInTitle: "Iniciar sesión",
    signInHint: "Ingrese el token de administrador que recibió. Solo se guarda en esta pestaña del navegador.",
    tokenLabel: "Token de administrador",
    tokenRequired: "Ingrese su token de administrador.",
    signingIn: "Iniciando sesión…",
    signOut: "Cerrar sesión",
    signedOut: "Cerró la sesión.",
    signedInAs: "{name} · {role}",
    role_admin: "administrador",
    role_viewer: "consulta (solo lectura)",
    sessionEnded: "Su sesión terminó: el token ya no es aceptado. Inicie sesión de nuevo.",
    connectorsTitle: "Conectores de WhatsApp",
    connectorsHint: "Elija un conector para ver y gestionar sus números bloqueados.",
    noConnectors: "No hay conectores configurados.",
    colName: "Nombre",
    colDisplayNumber: "Número visible",
    colPhoneNumberId: "ID del número de teléfono",
    colBlockedCount: "Números bloqueados",
    colActions: "Acciones",
    blockButton: "Bloquear números",
    blockButtonFor: "Bloquear números de {name}",
    viewButton: "Ver números bloqueados",
    viewButtonFor: "Números bloqueados de {name}",
    blockNumbersTitle: "Bloquear números",
    connectorFilterLabel: "Buscar un conector",
    connectorFilterPlaceholder: "Nombre, número o ID",
    connectorsShowing: "Mostrando {n} de {total}",
    showMoreConnectors: "Mostrar más",
    noConnectorMatches: "Ningún conector coincide con «{q}».",
    close: "Cerrar",
    numberLabel: "Número",
    numberPlaceholder: "+57 300 123 4567",
    reasonLabel: "Motivo (opcional)",
    durationLabel: "Duración",
    durationPermanent: "Permanente",
    duration1d: "1 día",
    duration7d: "7 días",
    duration30d: "30 días",
    colExpires: "Vence",
    never: "Nunca",
    addNumber: "Agregar número",
    addHint: "WhatsApp solo permite bloquear números que escribieron a este conector en las últimas 24 horas.",
    everywhereLabel: "En todos los conectores",
    unsyncedLabel: "También donde no ha escrito (conectores que no sincronizan con Meta)",
    blockedEverywhere: "{number}: bloqueado en {blocked}.",
    notBlockedEverywhere: "No bloqueado en {skipped}: no ha escrito allí en las últimas 24 horas.",
    blockedNowhere: "{number} no se bloqueó en ningún conector.",
    alsoBlockedOn: "También bloqueado en {connectors}",
    autoBlock: "automático",
    optoutsTitle: "Excluidos de plantillas y marketing",
    optoutsHint:
      "Estos usuarios siguen escribiendo y reciben respuestas, pero las plantillas y los mensajes de marketing para ellos se rechazan. Un mensaje como BAJA o STOP los agrega; ALTA o START los quita.",
    optoutNumberLabel: "Número a excluir",
    optOut: "Excluir",
    optIn: "Volver a incluir {number}",
    noOptouts: "Nadie se ha excluido en este conector.",
    optedOut: "{number} ya no recibe plantillas ni mensajes de marketing.",
    alreadyOptedOut: "{number} ya estaba excluido.",
    optedIn: "{number} vuelve a recibir plantillas y mensajes de marketing.",
    optoutSince: "desde {date} · {reason} · {by}",
    error_not_opted_out_n: "{number} no está excluido en este conector.",
    error_not_opted_out: "Ese número no está excluido en este conector.",
    numberRequired: "Ingrese el número a bloquear, con su código de país.",
    readOnly: "Solo lectura: su token puede ver los números bloqueados, pero no cambiarlos.",
    blockedNumbersTitle: "Números bloqueados",
    searchLabel: "Buscar",
    searchPlaceholder: "Número, motivo o nombre",
    colNumber: "Número",
    colBlockedAt: "Bloqueado el",
    colReason: "Motivo",
    colBlockedBy: "Bloqueado por",
    colUnblock: "Desbloquear",
    unblockNumber: "Desbloquear {number}",
    noBlocks: "No hay números bloqueados en este conector.",
    noMatches: "Ningún número bloqueado coincide con «{q}».",
    loading: "Cargando…",
    showing: "Mostrando {n}",
    showingMore: "Mostrando {n} · hay más",
    loadMore: "Cargar más",
    blocked: "{number} quedó bloqueado.",
    alreadyBlocked: "{number} ya estaba bloqueado ({date}).",
    alreadyBlockedReason: "{number} ya estaba bloqueado ({date}) con el motivo «{reason}». Use el lápiz para cambiarlo.",
    unblocked: "{number} ya no está bloqueado.",
    editBlock: "Cambiar el bloqueo de {number}",
    editTitle: "Cambiar bloqueo",
    expiryLabel: "Vence",
    keepExpiry: "Dejar como está",
    save: "Guardar",
    updated: "Se cambió el bloqueo de {number}.",
    alreadyUnblocked: "{number} ya estaba desbloqueado.",
    confirmTitle: "¿Desbloquear este número?",
    confirmText: "{number} podrá volver a escribir a {connector} y los agentes podrán escribirle.",
    cancel: "Cancelar",
    unblock: "Desbloquear",
    none: "—",
    error_unauthorized: "El token no fue aceptado. Revíselo e inicie sesión de nuevo.",
    error_forbidden: "Su token es de solo lectura: puede ver los números bloqueados, pero no cambiarlos.",
    error_invalid_number: "Ese no es un número de teléfono válido. Escríbalo con su código de país, p. ej. +57 300 123 4567.",
    error_invalid_number_n: "{number} no es un número de teléfono válido. Escríbalo con su código de país, p. ej. +57 300 123 4567.",
    error_not_recently_active:
      "Este número no ha escrito a este conector en las últimas 24 horas, y WhatsApp solo permite bloquear números que escribieron recientemente.",
    error_not_recently_active_n:
      "{number} no ha escrito a este conector en las últimas 24 horas, y WhatsApp solo permite bloquear números que escribieron recientemente.",
    error_not_blocked: "Ese número no está bloqueado en este conector.",
    error_not_blocked_n: "{number} no está bloqueado en este conector.",
    error_unknown_connector: "Este conector ya no está configurado en el proxy. Recargue la página.",
    error_not_found: "El proxy no conoce esta dirección. Recargue la página.",
    error_store_unavailable: "El almacén de bloqueos no está disponible, así que no se cambió nada. Inténtelo de nuevo en un momento.",
    error_bad_request: "El proxy no aceptó la solicitud. Revise el número, el motivo (máximo 500 caracteres) y la duración.",
    error_body_too_large: "La solicitud es demasiado grande para el proxy.",
    error_body_timeout: "La solicitud tardó demasiado en llegar al proxy. Inténtelo de nuevo.",
    error_too_many_attempts: "Se probaron demasiados tokens incorrectos desde este equipo. Espere unos minutos e inténtelo de nuevo.",
    error_internal_error: "El proxy tuvo un error interno. Quedó registrado; inténtelo de nuevo o avise al administrador.",
    error_network: "No se puede contactar con el proxy. Revise la conexión e inténtelo de nuevo.",
    error_generic: "La solicitud falló (HTTP {status}). Inténtelo de nuevo o avise al administrador.",
  },
};

/** An error answer of the admin API ({"error": {"code", "message"}}), or a network failure (status 0). */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

const $ = (id) => document.getElementById(id);

/** Put a copy of the template #`id` in place of each <div data-`kind`="name">, shaped by `build(copy, name)`. */
function instantiate(kind, id, build) {
  for (const slot of document.querySelectorAll(`[data-${kind}]`)) {
    const copy = $(id).content.cloneNode(true);
    build(copy, slot.dataset[kind]);
    slot.replaceWith(copy);
  }
}

/**
 * The page's two listings, copies of the #listing template: a table with its column headers, an empty-state line and
 * a foot with the count and a "more" button, with the ids `${name}-table`, `-body`, `-empty`, `-count`. A column is
 * [label key, the class of its cells if they are plain (text, labelled by the column on narrow screens), its header's
 * class, and for a header label inside a span, the span's class]. The template #`row` holds a row's other cells; the
 * plain ones are put in their places among them.
 */
const LISTINGS = {
  connectors: {
    caption: "connectorsTitle",
    foot: "list-foot",
    more: ["connectors-more", "showMoreConnectors"],
    row: "connector-row",
    columns: [
      ["colName"],
      ["colDisplayNumber", "connector-display"],
      ["colPhoneNumberId", "connector-pnid mono"],
      ["colBlockedCount", "connector-count numeric", "numeric"],
      ["colActions", "", "actions", ""],
    ],
  },
  blocks: {
    labelledBy: "blocked-title",
    scroll: true,
    foot: "dialog-foot",
    more: ["load-more", "loadMore"],
    row: "block-row",
    columns: [
      ["colNumber"],
      ["colBlockedAt", "block-date"],
      ["colReason", "block-reason"],
      ["colBlockedBy", "block-by"],
      ["colExpires", "block-expires"],
      ["colActions", "", "actions edit-only", "visually-hidden"],
    ],
  },
};

function buildListing(listing, name) {
  const spec = LISTINGS[name];
  const [wrap, empty, foot] = listing.children;
  const table = wrap.querySelector("table");
  wrap.classList.toggle("table-scroll", Boolean(spec.scroll));
  table.id = `${name}-table`;
  if (spec.caption) {
    const caption = table.createCaption();
    caption.className = "visually-hidden";
    caption.dataset.i18n = spec.caption;
  }
  if (spec.labelledBy) {
    table.setAttribute("aria-labelledby", spec.labelledBy);
    table.setAttribute("aria-busy", "false");
  }
  const row = $(spec.row).content.firstElementChild;
  spec.columns.forEach(([label, cell, header, span], i) => {
    const th = document.createElement("th");
    th.scope = "col";
    if (header) th.className = header;
    const text = span === undefined ? th : th.appendChild(document.createElement("span"));
    if (span) text.className = span;
    text.dataset.i18n = label;
    table.tHead.rows[0].append(th);
    if (cell) {
      const td = document.createElement("td");
      td.className = cell;
      row.insertBefore(td, row.children[i] ?? null);
    }
  });
  table.tBodies[0].id = `${name}-body`;
  empty.id = `${name}-empty`;
  foot.className = spec.foot;
  const [count, more] = foot.children;
  count.id = `${name}-count`;
  [more.id, more.dataset.i18n] = spec.more;
}

/**
 * A block's terms (reason, and how long it lasts), copies of the #terms template with the ids `${name}-reason` and
 * the select's: in the add form "Permanent" is the value "", in the edit dialog "permanent" after "Keep as it is".
 */
const TERMS = {
  add: { select: ["add-duration", "duration", "durationLabel"], permanent: "" },
  edit: { select: ["edit-expiry", "expiry", "expiryLabel"], permanent: "permanent", keep: "keepExpiry" },
};

function buildTerms(terms, name) {
  const spec = TERMS[name];
  const [reason, expiry] = terms.children;
  reason.querySelector("input").id = `${name}-reason`;
  reason.querySelector("label").htmlFor = `${name}-reason`;
  const label = expiry.querySelector("label");
  const select = expiry.querySelector("select");
  [select.id, select.name, label.dataset.i18n] = spec.select;
  label.htmlFor = select.id;
  select.options[0].value = spec.permanent;
  if (spec.keep) {
    const keep = new Option("", "keep");
    keep.dataset.i18n = spec.keep;
    select.prepend(keep);
    select.selectedIndex = 0;
  }
}

instantiate("listing", "listing", buildListing);
instantiate("terms", "terms", buildTerms);

const el = {
  signinView: $("signin-view"),
  signinForm: $("signin-form"),
  tokenInput: $("token-input"),
  signinButton: $("signin-button"),
  signinError: $("signin-error"),
  session: $("session"),
  sessionWho: $("session-who"),
  signOut: $("sign-out"),
  pageStatus: $("page-status"),
  connectorsView: $("connectors-view"),
  connectorsBody: $("connectors-body"),
  connectorsEmpty: $("connectors-empty"),
  connectorsError: $("connectors-error"),
  connectorRow: $("connector-row"),
  connectorTools: $("connector-tools"),
  connectorFilter: $("connector-filter"),
  connectorsCount: $("connectors-count"),
  connectorsMore: $("connectors-more"),
  blocksDialog: $("blocks-dialog"),
  blocksTitle: $("blocks-title"),
  blocksConnector: $("blocks-connector"),
  blocksClose: $("blocks-close"),
  addForm: $("add-form"),
  addNumber: $("add-number"),
  addReason: $("add-reason"),
  addDuration: $("add-duration"),
  addButton: $("add-button"),
  everywhereFields: $("everywhere-fields"),
  optouts: $("optouts"),
  optoutForm: $("optout-form"),
  optoutNumber: $("optout-number"),
  optoutButton: $("optout-button"),
  optoutList: $("optout-list"),
  optoutsEmpty: $("optouts-empty"),
  addEverywhere: $("add-everywhere"),
  addUnsynced: $("add-unsynced"),
  readonlyNote: $("readonly-note"),
  dialogError: $("dialog-error"),
  dialogStatus: $("dialog-status"),
  searchForm: $("search-form"),
  searchInput: $("search-input"),
  blocksTable: $("blocks-table"),
  blocksBody: $("blocks-body"),
  blocksEmpty: $("blocks-empty"),
  blocksCount: $("blocks-count"),
  loadMore: $("load-more"),
  blockRow: $("block-row"),
  confirmDialog: $("confirm-dialog"),
  confirmText: $("confirm-text"),
  confirmCancel: $("confirm-cancel"),
  confirmOk: $("confirm-ok"),
  editDialog: $("edit-dialog"),
  editForm: $("edit-form"),
  editNumber: $("edit-number"),
  editReason: $("edit-reason"),
  editExpiry: $("edit-expiry"),
  editError: $("edit-error"),
  editCancel: $("edit-cancel"),
  editSave: $("edit-save"),
};

const state = {
  lang: "en",
  token: null,
  session: null,
  connectors: [],
  connectorQuery: "",
  connectorLimit: CONNECTOR_PAGE,
  current: null, // the connector whose Block Numbers dialog is open
  opener: null, // the button that opened it, focused again on close
  blocks: [],
  nextCursor: null,
  query: "",
  listing: null, // AbortController of the list request in flight
  loading: false,
  searchTimer: 0,
  pendingUnblock: null, // {entry, button} while the confirmation is open
  editing: null, // {entry, button} while the change dialog is open
  editError: null,
  dialogError: null, // ApiError shown in the dialog (kept to re-render on a language switch)
  dialogStatus: null, // {key, vars} shown in the dialog
  signinError: null,
  connectorsError: null,
};

// ---------------------------------------------------------------- language

function storageGet(storage, key) {
  try {
    return storage.getItem(key);
  } catch {
    return null; // storage disabled by the browser's privacy settings
  }
}

function storageSet(storage, key, value) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // storage disabled: the page still works, it just does not remember
  }
}

function initialLanguage() {
  const saved = storageGet(localStorage, LANG_KEY);
  if (saved && saved in MESSAGES) return saved;
  const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const tag of preferred) {
    const base = String(tag || "").toLowerCase().split("-")[0];
    if (base in MESSAGES) return base;
  }
  return "en";
}

function t(key, vars = {}) {
  const text = MESSAGES[state.lang][key] ?? MESSAGES.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (match, name) => (name in vars ? String(vars[name]) : match));
}

/** The locale for dates and numbers: the browser's own when it is a variant of the chosen language. */
function locale() {
  const browser = navigator.language || "";
  return browser.toLowerCase().startsWith(state.lang) ? browser : state.lang;
}

function formatDate(iso, long = false) {
  const options = long
    ? { dateStyle: "full", timeStyle: "long" }
    : { dateStyle: "medium", timeStyle: "short" };
  return new Intl.DateTimeFormat(locale(), options).format(new Date(iso));
}

function formatCount(n) {
  return new Intl.NumberFormat(locale()).format(n);
}

function setLanguage(lang, remember) {
  state.lang = lang in MESSAGES ? lang : "en";
  if (remember) storageSet(localStorage, LANG_KEY, state.lang);
  document.documentElement.lang = state.lang;
  document.title = t("pageTitle");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of document.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
  for (const button of document.querySelectorAll(".lang-button")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
  }
  renderSession();
  renderConnectors();
  renderMessage(el.signinError, state.signinError);
  renderMessage(el.connectorsError, state.connectorsError);
  renderMessage(el.editError, state.editError);
  if (state.current) {
    renderDialogHeading();
    renderBlocks();
    renderOptouts();
    renderDialogMessages();
  }
}

// ---------------------------------------------------------------- API

function encode(segment) {
  return encodeURIComponent(segment);
}

/**
 * Call the admin API (relative URLs, so the page works wherever the proxy mounts /admin/).
 * @returns {Promise<{status: number, data: any}>}
 */
async function api(method, path, { body, token = state.token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`; // none: the reverse proxy says who is signed in
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      signal,
    });
  } catch (err) {
    if (signal && signal.aborted) throw err;
    throw new ApiError(0, "network", "");
  }
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const apiError = new ApiError(response.status, String(error.code || "http_error"), String(error.message || ""));
    if (response.status === 401 && state.session && token === state.token) signOut(apiError);
    throw apiError;
  }
  return { status: response.status, data };
}

// ---------------------------------------------------------------- messages

/**
 * The sentence for an error, in the page's language. The page owns a sentence for every error code the API
 * answers (the API's own message is English, for logs and scripts, and is not shown); `error.number`, the number
 * the action was about, is named in it when known.
 */
function errorText(error) {
  if (error.summaryKey) return t(error.summaryKey);
  const key = `error_${error.code}`;
  if (error.number && `${key}_n` in MESSAGES.en) return t(`${key}_n`, { number: error.number });
  if (key in MESSAGES.en) return t(key);
  return t("error_generic", { status: error.status || "?" });
}

/** Show an ApiError (or a local {summaryKey}) in `node`, or hide it. */
function renderMessage(node, error) {
  if (!error) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  node.textContent = errorText(error);
  node.hidden = false;
}

/** The same error, saying which number it was about (the sentence then names it). */
function about(error, number) {
  if (error instanceof ApiError) error.number = number;
  return error;
}

function localError(summaryKey) {
  return { code: "local", summaryKey };
}

function announce(text) {
  el.pageStatus.textContent = text;
}

function setDialogError(error) {
  state.dialogError = error;
  if (error) state.dialogStatus = null;
  renderDialogMessages();
}

function setDialogStatus(key, vars) {
  state.dialogStatus = key ? { key, vars } : null;
  if (key) state.dialogError = null;
  renderDialogMessages();
}

function renderDialogMessages() {
  renderMessage(el.dialogError, state.dialogError);
  if (state.dialogStatus) {
    const { key, vars, more } = state.dialogStatus; // more: a second sentence (block everywhere's skipped connectors)
    el.dialogStatus.textContent = t(key, vars) + (more ? ` ${t(more.key, more.vars)}` : "");
    el.dialogStatus.hidden = false;
  } else {
    el.dialogStatus.textContent = "";
    el.dialogStatus.hidden = true;
  }
}

// ---------------------------------------------------------------- sign in / out

function canEdit() {
  return Boolean(state.session && state.session.role === "admin");
}

function renderSession() {
  if (!state.session) {
    el.session.hidden = true;
    el.sessionWho.textContent = "";
    return;
  }
  el.sessionWho.textContent = t("signedInAs", { name: state.session.name, role: t(`role_${state.session.role}`) });
  el.session.hidden = false;
}

function showSignIn(error) {
  state.signinError = error || null;
  renderMessage(el.signinError, state.signinError);
  el.tokenInput.setAttribute("aria-invalid", String(Boolean(error)));
  el.connectorsView.hidden = true;
  el.signinView.hidden = false;
  renderSession();
  el.tokenInput.focus();
}

/** Check the token with the API and show the connectors; `saved` marks a token restored from this tab's storage. */
async function signIn(token, saved = false) {
  el.signinButton.disabled = true;
  el.signinButton.textContent = t("signingIn");
  try {
    const { data } = await api("GET", "api/session", { token });
    state.token = token;
    state.session = { name: String(data.name), role: String(data.role) };
    storageSet(sessionStorage, TOKEN_KEY, token);
    state.signinError = null;
    renderMessage(el.signinError, null);
    el.tokenInput.value = "";
    el.tokenInput.setAttribute("aria-invalid", "false");
    renderSession();
    el.signinView.hidden = true;
    el.connectorsView.hidden = false;
    document.body.classList.toggle("read-only", !canEdit());
    await loadConnectors();
    const first = el.connectorsBody.querySelector("button");
    (first || $("main")).focus();
  } catch (err) {
    storageSet(sessionStorage, TOKEN_KEY, null);
    showSignIn(saved && err.status === 401 ? localError("sessionEnded") : err);
  } finally {
    el.signinButton.disabled = false;
    el.signinButton.textContent = t("signIn");
  }
}

/** Forget the token; with an error, say why (an expired or revoked token). */
function signOut(error) {
  storageSet(sessionStorage, TOKEN_KEY, null);
  state.token = null;
  state.session = null;
  state.connectors = [];
  state.connectorQuery = "";
  state.connectorLimit = CONNECTOR_PAGE;
  el.connectorFilter.value = "";
  if (el.editDialog.open) el.editDialog.close("cancel");
  if (el.confirmDialog.open) el.confirmDialog.close("cancel");
  if (el.blocksDialog.open) el.blocksDialog.close();
  renderConnectors();
  showSignIn(error ? localError("sessionEnded") : null);
  if (!error) announce(t("signedOut"));
}

// ---------------------------------------------------------------- connectors

async function loadConnectors() {
  try {
    const { data } = await api("GET", "api/connectors");
    state.connectors = Array.isArray(data.connectors) ? data.connectors : [];
    state.connectorsError = null;
  } catch (err) {
    if (!state.token) return;
    state.connectorsError = err;
  }
  renderMessage(el.connectorsError, state.connectorsError);
  renderConnectors();
}

function connectorLabel(connector) {
  return connector.display_number ? `${connector.name} · ${connector.display_number}` : connector.name;
}

/** Whether a connector matches the connectors' search: its name, or (for a query with no letters) the digits of
 * its number or ID however they are typed. */
function connectorMatches(connector, query) {
  if (!query) return true;
  if (String(connector.name).toLocaleLowerCase().includes(query.toLocaleLowerCase())) return true;
  const digits = query.replace(/\D/g, "");
  if (!digits || /\p{L}/u.test(query)) return false;
  const display = String(connector.display_number || "").replace(/\D/g, "");
  return display.includes(digits) || String(connector.phone_number_id).includes(digits);
}

/** Label a listing row's plain cells with their columns' names (shown before the value on narrow screens). */
function labelCells(row, name) {
  LISTINGS[name].columns.forEach(([label, cell], i) => {
    if (cell) row.cells[i].dataset.label = t(label);
  });
}

/** A <time> element showing a date, with the full date and time as its tooltip. */
function timeElement(iso) {
  const time = document.createElement("time");
  time.dateTime = iso;
  time.textContent = formatDate(iso);
  time.title = formatDate(iso, true);
  return time;
}

function renderConnectors() {
  const editable = canEdit();
  const matching = state.connectors.filter((c) => connectorMatches(c, state.connectorQuery));
  const shown = matching.slice(0, state.connectorLimit);
  const rows = shown.map((connector) => {
    const row = el.connectorRow.content.firstElementChild.cloneNode(true);
    row.dataset.pnid = connector.phone_number_id;
    labelCells(row, "connectors");
    row.querySelector(".connector-name").textContent = connector.name;
    row.querySelector(".connector-display").textContent = connector.display_number || t("none");
    row.querySelector(".connector-pnid").textContent = connector.phone_number_id;
    row.querySelector(".connector-count").textContent = formatCount(connector.blocked_count);
    const button = row.querySelector(".button-block");
    if (editable) {
      button.querySelector(".button-label").textContent = t("blockButton");
      button.setAttribute("aria-label", t("blockButtonFor", { name: connector.name }));
    } else {
      // Viewers cannot block: a neutral button that says what it does for them.
      button.classList.replace("button-danger", "button-secondary");
      button.querySelector("svg").remove();
      button.querySelector(".button-label").textContent = t("viewButton");
      button.setAttribute("aria-label", t("viewButtonFor", { name: connector.name }));
    }
    button.addEventListener("click", () => openBlocks(connector.phone_number_id));
    return row;
  });
  // Keep focus on the same connector's button when rows are rebuilt (language switch).
  const focusedPnid = el.connectorsBody.contains(document.activeElement)
    ? document.activeElement.closest("tr").dataset.pnid
    : null;
  el.connectorsBody.replaceChildren(...rows);
  const many = state.connectors.length > CONNECTOR_FILTER_FROM;
  el.connectorTools.hidden = !many;
  el.connectorsCount.textContent = many
    ? t("connectorsShowing", { n: formatCount(shown.length), total: formatCount(matching.length) })
    : "";
  el.connectorsMore.hidden = shown.length >= matching.length;
  if (state.session && state.connectors.length === 0 && !state.connectorsError) {
    el.connectorsEmpty.textContent = t("noConnectors");
    el.connectorsEmpty.hidden = false;
  } else if (state.connectors.length && matching.length === 0) {
    el.connectorsEmpty.textContent = t("noConnectorMatches", { q: state.connectorQuery });
    el.connectorsEmpty.hidden = false;
  } else {
    el.connectorsEmpty.hidden = true;
  }
  if (focusedPnid) connectorButton(focusedPnid)?.focus();
}

function filterConnectors() {
  state.connectorQuery = el.connectorFilter.value.trim();
  state.connectorLimit = CONNECTOR_PAGE;
  renderConnectors();
}

/** The next connectors; focus moves to the first new one. */
function moreConnectors() {
  const before = el.connectorsBody.rows.length;
  state.connectorLimit += CONNECTOR_PAGE;
  renderConnectors();
  const first = el.connectorsBody.rows[before];
  if (first) first.querySelector("button").focus();
}

function connectorButton(pnid) {
  const row = el.connectorsBody.querySelector(`tr[data-pnid="${CSS.escape(pnid)}"]`);
  return row ? row.querySelector(".button-block") : null;
}

// ---------------------------------------------------------------- Block Numbers dialog

function renderDialogHeading() {
  el.blocksConnector.textContent = `${connectorLabel(state.current)} · ${state.current.phone_number_id}`;
}

function openBlocks(pnid) {
  const connector = state.connectors.find((c) => c.phone_number_id === pnid);
  if (!connector) return;
  state.current = connector;
  state.opener = connectorButton(pnid);
  state.blocks = [];
  state.nextCursor = null;
  state.query = "";
  el.searchInput.value = "";
  el.addForm.reset();
  el.addNumber.setAttribute("aria-invalid", "false");
  setDialogStatus(null);
  setDialogError(null);
  const editable = canEdit();
  el.addForm.hidden = !editable;
  el.everywhereFields.hidden = state.connectors.length < 2;
  forgetElsewhere();
  el.optouts.open = false;
  el.optoutForm.hidden = !editable;
  optouts = [];
  renderOptouts();
  el.addUnsynced.disabled = true;
  el.readonlyNote.hidden = editable;
  el.blocksTable.querySelector("th.edit-only").hidden = !editable;
  // Viewers look at the list: the dialog is not called "Block Numbers" for them.
  el.blocksTitle.dataset.i18n = editable ? "blockNumbersTitle" : "blockedNumbersTitle";
  el.blocksTitle.textContent = t(el.blocksTitle.dataset.i18n);
  renderDialogHeading();
  renderBlocks();
  el.blocksDialog.showModal();
  (editable ? el.addNumber : el.searchInput).focus();
  loadBlocks(true);
}

function onBlocksDialogClosed() {
  if (state.listing) state.listing.abort();
  clearTimeout(state.searchTimer);
  state.current = null;
  state.blocks = [];
  const opener = state.opener;
  state.opener = null;
  if (opener && opener.isConnected) opener.focus();
  if (state.token) refreshCounts();
}

/** Update the connectors' blocked counts in place, so the focused button is not replaced. */
async function refreshCounts() {
  let data;
  try {
    ({ data } = await api("GET", "api/connectors"));
  } catch {
    return; // the counts stay as they were; the next full load corrects them
  }
  state.connectors = data.connectors;
  for (const connector of state.connectors) {
    const row = el.connectorsBody.querySelector(`tr[data-pnid="${CSS.escape(connector.phone_number_id)}"]`);
    if (row) row.querySelector(".connector-count").textContent = formatCount(connector.blocked_count);
  }
}

async function loadBlocks(reset) {
  if (!state.current) return;
  if (state.listing) state.listing.abort();
  const controller = new AbortController();
  state.listing = controller;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.query) params.set("q", state.query);
  if (!reset && state.nextCursor) params.set("cursor", state.nextCursor);
  const pnid = state.current.phone_number_id;
  state.loading = true;
  el.blocksTable.setAttribute("aria-busy", "true");
  el.loadMore.disabled = true;
  if (reset) renderBlocks();
  try {
    const { data } = await api("GET", `api/connectors/${encode(pnid)}/blocks?${params}`, { signal: controller.signal });
    if (reset) state.blocks = [];
    state.blocks.push(...data.blocks);
    state.nextCursor = data.next_cursor || null;
  } catch (err) {
    if (controller.signal.aborted) return;
    setDialogError(err);
  } finally {
    if (state.listing === controller) {
      state.listing = null;
      state.loading = false;
      el.blocksTable.setAttribute("aria-busy", "false");
      el.loadMore.disabled = false;
    }
  }
  if (!controller.signal.aborted) renderBlocks();
}

/** Next page; focus moves to the first new row so keyboard and screen reader users continue from there. */
async function loadMore() {
  const before = state.blocks.length;
  await loadBlocks(false);
  const first = el.blocksBody.rows[before];
  if (first) first.querySelector(".block-number").focus();
}

/** The number as people read it: the API's international format (+57 300 5550001), or the BSUID. */
function displayNumber(entry) {
  if (entry.display_number) return entry.display_number;
  return entry.type === "phone" ? `+${entry.number}` : entry.number;
}

function renderBlocks() {
  const editable = canEdit();
  const rows = state.blocks.map((entry) => {
    const row = el.blockRow.content.firstElementChild.cloneNode(true);
    row.dataset.number = entry.number;
    labelCells(row, "blocks");
    row.querySelector(".block-number-text").textContent = displayNumber(entry);
    if (entry.source === "auto") {
      const badge = document.createElement("span");
      badge.className = "block-auto";
      badge.textContent = t("autoBlock");
      row.querySelector(".block-by").append(entry.blocked_by, badge);
    }
    row.querySelector(".block-date").append(timeElement(entry.blocked_at));
    const reason = row.querySelector(".block-reason");
    reason.textContent = entry.reason || t("none");
    reason.classList.toggle("muted", !entry.reason);
    if (entry.source !== "auto") row.querySelector(".block-by").textContent = entry.blocked_by;
    const expires = row.querySelector(".block-expires");
    if (entry.expires_at) {
      expires.replaceChildren(timeElement(entry.expires_at));
    } else {
      expires.textContent = t("never");
      expires.classList.add("muted");
    }
    const actions = row.querySelector(".actions");
    if (editable) {
      const edit = actions.querySelector(".button-edit");
      const editLabel = t("editBlock", { number: displayNumber(entry) });
      edit.setAttribute("aria-label", editLabel);
      edit.title = editLabel;
      edit.addEventListener("click", () => openEdit(entry, edit));
      const button = actions.querySelector(".button-unblock");
      const label = t("unblockNumber", { number: displayNumber(entry) });
      button.setAttribute("aria-label", label);
      button.title = label;
      button.addEventListener("click", () => askUnblock(entry, button));
    } else {
      actions.remove(); // viewers get no unblock control at all, not just a hidden one
    }
    return row;
  });
  el.blocksBody.replaceChildren(...rows);
  showElsewhere();
  const shown = state.blocks.length;
  if (shown === 0) {
    el.blocksEmpty.textContent = state.loading ? t("loading") : state.query ? t("noMatches", { q: state.query }) : t("noBlocks");
    el.blocksEmpty.hidden = false;
  } else {
    el.blocksEmpty.hidden = true;
  }
  el.blocksCount.textContent = shown ? t(state.nextCursor ? "showingMore" : "showing", { n: formatCount(shown) }) : "";
  el.loadMore.hidden = !state.nextCursor;
}

// ---------------------------------------------------------------- block everywhere (issue 19)

const elsewhere = new Map(); // number -> names of the other connectors it is blocked on (this dialog's session)
let elsewhereGeneration = 0; // bumped when a change makes the answers asked so far stale

function forgetElsewhere() {
  elsewhere.clear();
  elsewhereGeneration += 1;
}

/** Under each listed number, the other connectors it is blocked on (one request per number, once). */
function showElsewhere() {
  if (state.connectors.length < 2 || !state.current) return;
  const pnid = state.current.phone_number_id;
  for (const row of el.blocksBody.rows) {
    const number = row.dataset.number;
    const key = `${pnid} ${number}`;
    if (elsewhere.has(key)) {
      renderElsewhere(number, elsewhere.get(key));
      continue;
    }
    elsewhere.set(key, []);
    const generation = elsewhereGeneration;
    api("GET", `api/everywhere/blocks/${encode(number)}`)
      .then(({ data }) => {
        if (generation !== elsewhereGeneration) return; // asked before a change: a newer answer is on its way
        const names = data.results
          .filter((r) => r.outcome === "blocked" && r.phone_number_id !== pnid)
          .map((r) => r.name);
        elsewhere.set(key, names);
        // The list may have been rendered again while this was asked: write into the row shown now.
        if (state.current && state.current.phone_number_id === pnid) renderElsewhere(number, names);
      })
      .catch(() => elsewhere.delete(key)); // shown again on the next render; the list itself is not affected
  }
}

function renderElsewhere(number, names) {
  for (const row of el.blocksBody.rows) {
    if (row.dataset.number !== number) continue;
    const note = row.querySelector(".block-elsewhere");
    note.textContent = names.length ? t("alsoBlockedOn", { connectors: names.join(", ") }) : "";
    note.hidden = !names.length;
  }
}

async function blockEverywhere(number, reason, duration) {
  const body = { number, reason, include_unsynced: el.addUnsynced.checked };
  if (duration) body.duration = duration;
  const { data } = await api("POST", "api/everywhere/blocks", { body });
  const done = data.results.filter((r) => r.outcome === "blocked" || r.outcome === "already_blocked");
  const skipped = data.results.filter((r) => r.outcome === "not_recently_active" || r.outcome === "invalid_number");
  const shown = done.length ? displayNumber(done[0].block) : number;
  const blocked = done.map((r) => r.name).join(", ");
  const more = skipped.length
    ? { key: "notBlockedEverywhere", vars: { skipped: skipped.map((r) => r.name).join(", ") } }
    : null;
  forgetElsewhere();
  el.addForm.reset();
  el.addUnsynced.disabled = true;
  setDialogStatus(done.length ? "blockedEverywhere" : "blockedNowhere", { number: shown, blocked });
  state.dialogStatus.more = more;
  renderDialogMessages();
  state.query = "";
  el.searchInput.value = "";
  await loadBlocks(true);
}

// ---------------------------------------------------------------- opt-outs (issue 19)

let optouts = []; // the current connector's opt-outs, loaded when the section is opened

async function loadOptouts() {
  if (!state.current || !el.optouts.open) return;
  const pnid = state.current.phone_number_id;
  try {
    const { data } = await api("GET", `api/connectors/${encode(pnid)}/optouts`);
    if (!state.current || state.current.phone_number_id !== pnid) return;
    optouts = data.optouts;
    renderOptouts();
  } catch (err) {
    setDialogError(err);
  }
}

function renderOptouts() {
  const editable = canEdit();
  const items = optouts.map((entry) => {
    const item = document.createElement("li");
    const number = document.createElement("span");
    number.className = "mono";
    number.textContent = displayNumber(entry);
    const detail = document.createElement("span");
    detail.className = "optout-detail";
    detail.textContent = t("optoutSince", {
      date: formatDate(entry.opted_out_at),
      reason: entry.reason || t("none"),
      by: entry.by,
    });
    item.append(number, detail);
    if (editable) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button button-quiet";
      button.textContent = t("optIn", { number: displayNumber(entry) });
      button.addEventListener("click", () => optIn(entry, button));
      item.append(button);
    }
    return item;
  });
  el.optoutList.replaceChildren(...items);
  el.optoutsEmpty.textContent = t("noOptouts");
  el.optoutsEmpty.hidden = optouts.length > 0;
}

async function addOptout(event) {
  event.preventDefault();
  const number = el.optoutNumber.value.trim();
  if (!number) {
    el.optoutNumber.focus();
    return;
  }
  el.optoutButton.disabled = true;
  try {
    const pnid = state.current.phone_number_id;
    const { status, data } = await api("POST", `api/connectors/${encode(pnid)}/optouts`, { body: { number } });
    el.optoutForm.reset();
    setDialogStatus(status === 201 ? "optedOut" : "alreadyOptedOut", { number: displayNumber(data) });
    await loadOptouts();
  } catch (err) {
    setDialogError(about(err, number));
  } finally {
    el.optoutButton.disabled = false;
  }
}

async function optIn(entry, button) {
  button.disabled = true;
  try {
    const pnid = state.current.phone_number_id;
    await api("DELETE", `api/connectors/${encode(pnid)}/optouts/${encode(entry.number)}`);
    setDialogStatus("optedIn", { number: displayNumber(entry) });
  } catch (err) {
    setDialogError(about(err, displayNumber(entry)));
  }
  await loadOptouts();
  if (el.blocksDialog.open) el.optoutNumber.focus();
}

async function addBlock(event) {
  event.preventDefault();
  const number = el.addNumber.value.trim();
  if (!number) {
    el.addNumber.setAttribute("aria-invalid", "true");
    setDialogError(localError("numberRequired"));
    el.addNumber.focus();
    return;
  }
  if (el.addEverywhere.checked) {
    el.addButton.disabled = true;
    try {
      await blockEverywhere(number, el.addReason.value.trim(), el.addDuration.value);
    } catch (err) {
      setDialogError(about(err, number));
    } finally {
      el.addButton.disabled = false;
      if (el.blocksDialog.open) el.addNumber.focus();
    }
    return;
  }
  const reason = el.addReason.value.trim();
  const duration = el.addDuration.value;
  const pnid = state.current.phone_number_id;
  el.addButton.disabled = true;
  try {
    const body = duration ? { number, reason, duration } : { number, reason };
    const { status, data } = await api("POST", `api/connectors/${encode(pnid)}/blocks`, { body });
    el.addForm.reset();
    el.addNumber.setAttribute("aria-invalid", "false");
    const vars = { number: displayNumber(data), date: formatDate(data.blocked_at) };
    if (status === 201) setDialogStatus("blocked", vars);
    else if (reason && data.reason !== reason) {
      // POST never overwrites a block: say what it is, and how to change it (PATCH, the pencil).
      setDialogStatus("alreadyBlockedReason", { ...vars, reason: data.reason || t("none") });
    } else setDialogStatus("alreadyBlocked", vars);
    // Show the new entry where it belongs: newest first, with no filter hiding it.
    state.query = "";
    el.searchInput.value = "";
    await loadBlocks(true);
  } catch (err) {
    if (err.code === "invalid_number" || err.code === "not_recently_active") {
      el.addNumber.setAttribute("aria-invalid", "true");
    }
    setDialogError(about(err, number));
  } finally {
    el.addButton.disabled = false;
    if (el.blocksDialog.open) el.addNumber.focus();
  }
}

function askUnblock(entry, button) {
  state.pendingUnblock = { entry, button };
  el.confirmText.textContent = t("confirmText", { number: displayNumber(entry), connector: state.current.name });
  el.confirmDialog.returnValue = "";
  el.confirmDialog.showModal();
  el.confirmCancel.focus(); // the safe choice is the default one
}

async function onConfirmClosed() {
  const pending = state.pendingUnblock;
  state.pendingUnblock = null;
  if (!pending || !state.current) return;
  if (el.confirmDialog.returnValue !== "confirm") {
    if (pending.button.isConnected) pending.button.focus();
    return;
  }
  const { entry } = pending;
  const pnid = state.current.phone_number_id;
  let key = "unblocked";
  try {
    await api("DELETE", `api/connectors/${encode(pnid)}/blocks/${encode(entry.number)}`);
  } catch (err) {
    if (err.code !== "not_blocked") {
      setDialogError(about(err, displayNumber(entry)));
      if (pending.button.isConnected) pending.button.focus();
      return;
    }
    key = "alreadyUnblocked"; // someone else removed it meanwhile: the list just catches up
  }
  const index = state.blocks.findIndex((e) => e.number === entry.number);
  if (index >= 0) state.blocks.splice(index, 1);
  renderBlocks();
  setDialogStatus(key, { number: displayNumber(entry) });
  const rows = el.blocksBody.rows;
  const next = rows.length ? rows[Math.min(Math.max(index, 0), rows.length - 1)].querySelector("button") : null;
  (next || el.searchInput).focus();
}

// ---------------------------------------------------------------- changing a block (PATCH)

function openEdit(entry, button) {
  state.editing = { entry, button };
  state.editError = null;
  renderMessage(el.editError, null);
  el.editNumber.textContent = displayNumber(entry);
  el.editReason.value = entry.reason;
  el.editExpiry.value = "keep";
  el.editDialog.returnValue = "";
  el.editDialog.showModal();
  el.editReason.focus();
}

async function saveEdit(event) {
  event.preventDefault();
  const editing = state.editing;
  if (!editing || !state.current) return;
  const { entry } = editing;
  const body = { reason: el.editReason.value.trim() };
  const expiry = el.editExpiry.value;
  if (expiry === "permanent") body.expires_at = null;
  else if (expiry !== "keep") body.duration = expiry;
  const pnid = state.current.phone_number_id;
  el.editSave.disabled = true;
  try {
    const { data } = await api("PATCH", `api/connectors/${encode(pnid)}/blocks/${encode(entry.number)}`, { body });
    const index = state.blocks.findIndex((e) => e.number === entry.number);
    if (index >= 0) state.blocks[index] = data;
    state.editing = null;
    el.editDialog.close("saved");
    renderBlocks();
    setDialogStatus("updated", { number: displayNumber(data) });
    const row = el.blocksBody.querySelector(`tr[data-number="${CSS.escape(data.number)}"]`);
    (row ? row.querySelector(".button-edit") : el.searchInput).focus();
  } catch (err) {
    state.editError = about(err, displayNumber(entry));
    renderMessage(el.editError, state.editError);
  } finally {
    el.editSave.disabled = false;
  }
}

function onEditClosed() {
  const editing = state.editing;
  state.editing = null;
  state.editError = null;
  if (editing && editing.button.isConnected) editing.button.focus(); // cancelled: back where the user was
}

// ---------------------------------------------------------------- wiring

function onSearchInput() {
  clearTimeout(state.searchTimer);
  state.searchTimer = setTimeout(runSearch, SEARCH_DELAY_MS);
}

function runSearch() {
  clearTimeout(state.searchTimer);
  const query = el.searchInput.value.trim();
  if (query === state.query && (state.blocks.length || state.loading)) return;
  state.query = query;
  state.nextCursor = null;
  loadBlocks(true);
}

function wire() {
  for (const button of document.querySelectorAll(".lang-button")) {
    button.addEventListener("click", () => setLanguage(button.dataset.lang, true));
  }
  el.signinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = el.tokenInput.value.trim();
    if (!token) {
      showSignIn(localError("tokenRequired"));
      return;
    }
    signIn(token);
  });
  el.signOut.addEventListener("click", () => signOut(null));
  el.blocksClose.addEventListener("click", () => el.blocksDialog.close());
  el.blocksDialog.addEventListener("close", onBlocksDialogClosed);
  el.addForm.addEventListener("submit", addBlock);
  el.optoutForm.addEventListener("submit", addOptout);
  el.optouts.addEventListener("toggle", loadOptouts);
  el.addEverywhere.addEventListener("change", () => {
    el.addUnsynced.disabled = !el.addEverywhere.checked;
    if (!el.addEverywhere.checked) el.addUnsynced.checked = false;
  });
  el.addNumber.addEventListener("input", () => el.addNumber.setAttribute("aria-invalid", "false"));
  el.searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  el.searchInput.addEventListener("input", onSearchInput);
  el.loadMore.addEventListener("click", loadMore);
  el.confirmCancel.addEventListener("click", () => el.confirmDialog.close("cancel"));
  el.confirmOk.addEventListener("click", () => el.confirmDialog.close("confirm"));
  el.confirmDialog.addEventListener("close", onConfirmClosed);
  el.editForm.addEventListener("submit", saveEdit);
  el.editCancel.addEventListener("click", () => el.editDialog.close("cancel"));
  el.editDialog.addEventListener("close", onEditClosed);
  el.connectorFilter.addEventListener("input", filterConnectors);
  el.connectorsMore.addEventListener("click", moreConnectors);
}

async function start() {
  wire();
  setLanguage(initialLanguage(), false);
  const saved = storageGet(sessionStorage, TOKEN_KEY);
  el.signinView.hidden = true;
  if (saved) {
    await signIn(saved, true);
  } else if (!(await signedInByProxy())) {
    showSignIn(null);
  }
  document.body.classList.add("ready");
}

/** Behind an authenticating reverse proxy (admin.proxy_auth) the person is known without a token: ask the API once
 * without one. A 403 (signed in, but no role) is said on the sign-in form; anything else just shows the form. */
async function signedInByProxy() {
  try {
    await api("GET", "api/session", { token: null });
  } catch (err) {
    if (err.status === 403) {
      showSignIn(err);
      return true;
    }
    return false;
  }
  await signIn(null);
  return true;
}

start();
