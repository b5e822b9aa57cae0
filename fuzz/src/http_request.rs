//! `http_request`: sequences of HTTP requests to the real service (`ledger_api::app`,
//! the router inside the `prepare` middleware, exactly what `serve` runs) over an
//! embedded SQLite store in a temp dir, driven in process with
//! `tower::ServiceExt::oneshot`.
//!
//! The service is built once per process ([`fixture`]): two tenants, `acme` with an
//! administrator and one person per role (each redeemed their invite and confirmed TOTP
//! through the service itself), a funded EUR and a JPY account, a payee, payouts left
//! requested, approved and authorized, an HMAC-signing key, a scoped key and a webhook;
//! and `globex` with its administrator. Like a real server, it keeps what the inputs do
//! (a finding may depend on the inputs before it: the failure message prints the
//! request). Two things the fixture keeps to itself, so that it stays useful: the
//! fuzzer never learns its keys' ids (so it cannot revoke them), and a `DELETE` naming a
//! person of the cast is not sent. The projector is not started: before a read the
//! harness brings the read models up to the head, so that reads answer at once, and
//! the read wait is zero.
//!
//! An input ([`Plan::decode`], through `arbitrary::Unstructured`) is one to
//! [`STEPS_MAX`] requests: a method, a path (a route of `ledger_api::routes::ROUTES`
//! with its segments, or raw bytes), a query, an `Authorization` (none, one of the
//! fixture's keys, a key an earlier request of the input obtained, a wrong secret, raw),
//! HMAC signature headers (valid for the fixture's `hmac` key, stale, replayed, over
//! another body, raw), `Idempotency-Key`, `X-Request-Id`, `Content-Type`, one more
//! header, the client address, and a body (nothing, raw bytes, a large one, or JSON built
//! from fuzzed values: field names, amounts, ids, fresh TOTP codes, nested values). Ids
//! come from the fixture and from the answers of the input's earlier requests, so a
//! sequence can request a payout and then approve it.
//!
//! What must hold for every answer ([`check`]): no panic and no hang; no 5xx (the one
//! exception: `503 projection_behind` when the request's own `min_seq` is beyond the
//! tenant's head, which the service cannot tell from a seq committed by another
//! process); a status of DESIGN section 7; an error is `application/problem+json` with
//! a `code` and its `status`; `X-Request-Id` on every answer (the client's when
//! acceptable); `Retry-After` on 429, 503 and `two_factor_locked`; a 2xx to a command
//! committed (`Ledger-Seq`), unless it is an idempotent replay; no answer holds a
//! secret of the fixture (API keys, TOTP secrets) that the request did not carry itself;
//! and no error answer holds [`CANARY`] (problems never echo a value of the request).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arbitrary::Unstructured;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use ledger_api::config::Storage;
use ledger_api::http::auth::signing_string;
use ledger_api::http::context::{RequestId, BODY_MAX};
use ledger_api::limits::LimitConfig;
use ledger_api::records::{kind, TotpRecord};
use ledger_api::routes::ROUTES;
use ledger_api::state::AppState;
use ledger_api::writer::Submission;
use ledger_core::command::Command;
use ledger_core::ids::{PrincipalId, TenantId};
use ledger_store::ProjectStep;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use sha2::Sha256;
use tower::ServiceExt;

pub mod seeds;

// ---------------------------------------------------------------------------------------
// The input
// ---------------------------------------------------------------------------------------

/// Most requests in one input.
pub const STEPS_MAX: usize = 4;
/// Longest raw text or path, in bytes.
const RAW_MAX: usize = 255;
/// Longest raw body, in bytes.
const RAW_BODY_MAX: u16 = 4096;
/// Most repetitions of a `Long` text.
const LONG_MAX: u16 = 2048;
/// Most copies in a `Repeat` array (past the 1 000 payouts of a batch).
const REPEAT_MAX: u16 = 1100;
/// Most items of a JSON array or object, and of a query.
const ITEMS_MAX: u8 = 6;
/// Deepest JSON nesting built.
const DEPTH_MAX: usize = 4;

/// One input: the requests, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// 1 to [`STEPS_MAX`] requests.
    pub steps: Vec<Step>,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 0: the route's own method; else `METHODS[(n - 1) % len]`.
    pub method: u8,
    /// The path and query.
    pub target: Target,
    /// `Authorization`.
    pub auth: Auth,
    /// `X-Ledger-Timestamp`, `X-Ledger-Nonce`, `X-Ledger-Signature`.
    pub signature: Signature,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<Text>,
    /// `X-Request-Id`.
    pub request_id: Option<Text>,
    /// `Content-Type`.
    pub content_type: Option<Text>,
    /// One more header: name, value.
    pub extra_header: Option<(Text, Text)>,
    /// The client's address: `PEERS[n % len]`.
    pub peer: u8,
    /// The body.
    pub body: BodyPlan,
}

/// The path and query of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ROUTES[route % len]`, its `{…}` segments filled in order, and a query.
    Route {
        /// Index into `ROUTES`.
        route: u8,
        /// One per `{…}` segment of the route.
        segments: Vec<Text>,
        /// `name=value` pairs (none: no `?`).
        query: Vec<(Text, Text)>,
    },
    /// `/` and the bytes, as they are (skipped when not a valid URI).
    Raw(Vec<u8>),
}

/// `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No header.
    None,
    /// `Bearer` and the fixture's key `HELD[n % len]`.
    Held(u8),
    /// `Bearer` and a key an earlier request of this input obtained (newest first);
    /// none yet: no header.
    Obtained(u8),
    /// `Bearer` and the fixture key's id with another secret.
    WrongSecret(u8, Text),
    /// `Bearer ` and the text.
    Bearer(Text),
    /// The whole header value.
    Raw(Text),
}

/// The HMAC signature headers (the fixture's `hmac` key signs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// None of them.
    None,
    /// A valid signature of this request: now, a fresh nonce.
    Valid,
    /// A valid signature with the timestamp moved by `SKEWS[n % len]` seconds.
    Skewed(u8),
    /// A valid signature with the same nonce every time (the first use in a process
    /// passes).
    ReusedNonce,
    /// A signature over another body.
    OtherBody,
    /// Timestamp, nonce and signature as given.
    Raw(Text, Text, Text),
}

/// A text: a word of the dictionary, raw bytes, an id, a fresh TOTP code, or a long one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// `WORDS[n % len]`.
    Word(u8),
    /// The bytes (percent-encoded in a path or query; lossy UTF-8 in JSON).
    Raw(Vec<u8>),
    /// An id of a kind: the fixture's and those the input's answers named, newest
    /// first (`n % len`).
    Id(IdKind, u8),
    /// A fresh TOTP code: 0 the acting person's, else `HELD[(n - 1) % len]`'s (their
    /// lockout lifted first).
    Code(u8),
    /// `WORDS[word % len]` repeated `count` times.
    Long(u8, u16),
}

/// The kinds of ids a text can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdKind {
    /// `po_…`
    Payout,
    /// `acct_…`
    Account,
    /// `pay_…`
    Payee,
    /// `usr_…`
    User,
    /// `wh_…`
    Webhook,
    /// `key_…` (never one of the fixture's)
    Key,
    /// `inv_….secret` (spent ones of the fixture; fresh ones from `POST /v1/users`)
    Invite,
}

impl IdKind {
    const ALL: [IdKind; 7] = [
        IdKind::Payout,
        IdKind::Account,
        IdKind::Payee,
        IdKind::User,
        IdKind::Webhook,
        IdKind::Key,
        IdKind::Invite,
    ];

    fn index(self) -> usize {
        match self {
            IdKind::Payout => 0,
            IdKind::Account => 1,
            IdKind::Payee => 2,
            IdKind::User => 3,
            IdKind::Webhook => 4,
            IdKind::Key => 5,
            IdKind::Invite => 6,
        }
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body.
    Empty,
    /// JSON.
    Json(Json),
    /// The bytes.
    Raw(Vec<u8>),
    /// The byte repeated `LARGE_SIZES[n % len]` times (around the body limits).
    Large(u8, u8),
}

/// A JSON value built from fuzzed values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// `NUMBERS[n % len]`
    Number(u8),
    /// A string.
    Str(Text),
    /// An array.
    Array(Vec<Json>),
    /// An object (a repeated key: the last wins, as serde_json reads it).
    Object(Vec<(Text, Json)>),
    /// An array of `count` copies.
    Repeat(Box<Json>, u16),
}

// ---------------------------------------------------------------------------------------
// Dictionaries
// ---------------------------------------------------------------------------------------

/// Methods besides the route's own.
pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO",
];

/// The words texts are made of: field and parameter names, the values each field takes
/// (and their near misses), header names and values, path pieces.
#[rustfmt::skip]
pub const WORDS: &[&str] = &[
    // 0: body field names
    "name", "invite", "code", "role", "otp", "grants", "user", "scopes", "expires_at",
    "allowed_ips", "hmac", "currency", "amount", "reference", "iban", "account", "payee",
    "metadata", "payouts", "reason", "rail", "rules", "min_amount", "approvals", "url", "events",
    "description", "payout", "extra",
    // 29: query names
    "min_seq", "status", "after", "limit", "actor", "action", "result", "from", "to",
    // 38: roles
    "admin", "requester", "approver", "authorizer", "executor", "releaser", "treasurer", "auditor",
    "Admin",
    // 47: permissions
    "user.manage", "role.manage", "apikey.manage", "account.manage", "payee.manage",
    "policy.manage", "ledger.read", "audit.read", "audit.export", "payout.request", "payout.cancel",
    "payee.read", "payout.approve", "payout.reject", "payout.authorize", "payout.execute",
    "payout.release", "payout.fail", "funds.deposit", "webhook.manage",
    // 67: payout actions and statuses
    "approve", "reject", "authorize", "execute", "release", "fail", "cancel", "%61uthorize",
    "%65xecute", "redeliver", "requested", "approved", "authorized", "executed", "released",
    "rejected", "cancelled", "failed", "accepted", "denied",
    // 87: currencies
    "EUR", "JPY", "KWD", "USD", "XXX", "eur",
    // 93: amounts
    "0", "0.00", "0.01", "1", "1.00", "10.00", "125.5", "125.505", "-1.00", "1e3",
    "999999999999999.99", "1000000000000000000000000000", "79228162514264337593543950336", " 1.00",
    "1,00", "+1.00", "0x10", "NaN", "\u{661}\u{662}", "5000.00", "2.00", "1.005",
    // 115: integers as text
    "2", "100", "500", "501", "1000", "1001", "10000", "-1", "4294967295", "4294967296",
    "9007199254740992", "18446744073709551615", "18446744073709551616", "9223372036854775807",
    "-9223372036854775808",
    // 130: timestamps
    "2026-11-22T09:00:00.000000Z", "9999-12-31T23:59:59.999999Z", "0000-01-01T00:00:00.000000Z",
    "2026-11-22T09:00:00Z", "2026-02-30T00:00:00.000000Z", "1970-01-01T00:00:00.000000Z",
    // 136: ids
    "po_1", "acct_ops", "pay_lark", "usr_admin", "svc_settlement", "key_x",
    "wh_abcdefghijkmnpqrstu", "inv_x.y", "usr_", "po_",
    // 146: IBANs
    "DE89370400440532013000", "GB82 WEST 1234 5698 7654 32", "DE89370400440532013001",
    "de89370400440532013000", "DE8937040044",
    // 151: webhook URLs
    "https://hooks.example.com/in", "http://127.0.0.1:9/", "http://169.254.169.254/latest",
    "http://[::1]/", "http://[fd00:ec2::254]/", "http://2130706433/", "http://0x7f.1/",
    "https://user:pw@example.com/", "https://example.com/#top", "ftp://example.com/",
    "http://[::ffff:7f00:1]/", "http://10.0.0.1/",
    // 163: event kinds
    "*", "payout.requested", "user.added", "account.opened",
    // 167: addresses
    "127.0.0.1", "10.0.0.0/8", "::1", "0.0.0.0/0", "::/0", "10.0.0.0/33", "::1/129", "not an ip",
    // 175: one-time codes
    "000000", "123456", "12345", "1234567", "abcdef",
    // 180: signature pieces
    "v1=", "v1=00", "v1=zz",
    // 183: header names
    "last-event-id", "idempotency-key", "x-request-id", "authorization", "content-type",
    "x-ledger-timestamp", "x-ledger-nonce", "x-ledger-signature", "accept",
    // 192: header values
    "Bearer ", "Basic dXNlcjpwdw==", "application/json", "text/plain",
    "application/x-www-form-urlencoded",
    // 197: idempotency keys, request ids
    "k1", "k2", "req-1",
    // 200: odd pieces
    "", " ", "null", "true", "%FF", "%00", "..", "%2F", "a/b", "\u{e9}", "x", "a", "\u{0}", "SEPA",
    "Zed",
    // 215: a canary (shaped like a secret): no error answer may hold it
    "CANARY-5ec7e7-d8e3f1a7c2b94e6f0a5d1c3b7e9f2a4c",
];

/// The canary word: a value shaped like a secret that, sent anywhere in a request, must
/// never come back in an error answer (problems are written from typed errors, never
/// echoed from the request).
pub const CANARY: &str = "CANARY-5ec7e7-d8e3f1a7c2b94e6f0a5d1c3b7e9f2a4c";

/// JSON numbers.
fn number(n: u8) -> Value {
    const INTEGERS: &[i64] = &[
        0,
        1,
        2,
        3,
        20,
        21,
        100,
        1000,
        1001,
        -1,
        1 << 31,
        1 << 32,
        (1 << 53) - 1,
        1 << 53,
        i64::MAX,
        i64::MIN,
    ];
    const FLOATS: &[f64] = &[1.5, -0.0, 1e300, 0.1];
    let n = usize::from(n) % (INTEGERS.len() + FLOATS.len() + 1);
    if let Some(i) = INTEGERS.get(n) {
        return Value::from(*i);
    }
    match FLOATS.get(n - INTEGERS.len()) {
        Some(f) => Value::from(*f),
        None => Value::from(u64::MAX),
    }
}

/// Body sizes around the limits: the limit, one past it, the drain limit and past it.
pub const LARGE_SIZES: &[usize] = &[BODY_MAX, BODY_MAX + 1, 1024 * 1024, 1024 * 1024 + 1];

/// Client addresses (the fixture's `hmac` key allows 127.0.0.0/8 and ::1).
pub const PEERS: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1)),
];

/// Timestamp skews of a signature, in seconds (the window is 300).
pub const SKEWS: &[i64] = &[-301, -300, -299, 299, 300, 301, -86_400, 86_400];

fn word(n: u8) -> &'static str {
    WORDS[usize::from(n) % WORDS.len()]
}

// ---------------------------------------------------------------------------------------
// Decoding (bytes -> plan) and encoding (plan -> bytes, for the seeds)
// ---------------------------------------------------------------------------------------

/// Reads choices off the input with `Unstructured` (one byte for a choice among at most
/// 256, two for a length up to 65 535); an exhausted input reads as zeros.
struct Reader<'a> {
    u: Unstructured<'a>,
}

impl Reader<'_> {
    fn pick(&mut self, options: usize) -> usize {
        self.u.choose_index(options).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.u.int_in_range(0..=u8::MAX).unwrap_or(0)
    }

    fn short(&mut self, max: u16) -> u16 {
        self.u.int_in_range(0..=max).unwrap_or(0)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = usize::from(self.byte()).min(max);
        let len = len.min(self.u.len());
        self.u.bytes(len).map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn long_bytes(&mut self, max: u16) -> Vec<u8> {
        let len = usize::from(self.short(max)).min(self.u.len());
        self.u.bytes(len).map(<[u8]>::to_vec).unwrap_or_default()
    }

    fn text(&mut self) -> Text {
        match self.pick(5) {
            0 => Text::Word(self.byte()),
            1 => Text::Raw(self.bytes(RAW_MAX)),
            2 => {
                let kind = IdKind::ALL[self.pick(IdKind::ALL.len())];
                Text::Id(kind, self.byte())
            }
            3 => Text::Code(self.byte()),
            _ => {
                let unit = self.byte();
                Text::Long(unit, self.short(LONG_MAX))
            }
        }
    }

    fn option_text(&mut self) -> Option<Text> {
        (self.pick(2) == 1).then(|| self.text())
    }

    fn json(&mut self, depth: usize) -> Json {
        match self.pick(7) {
            0 => Json::Null,
            1 => Json::Bool(self.pick(2) == 1),
            2 => Json::Number(self.byte()),
            3 => Json::Str(self.text()),
            4 => {
                let len = self.items(depth);
                Json::Array((0..len).map(|_| self.json(depth + 1)).collect())
            }
            5 => {
                let len = self.items(depth);
                Json::Object(
                    (0..len)
                        .map(|_| {
                            let key = self.text();
                            (key, self.json(depth + 1))
                        })
                        .collect(),
                )
            }
            _ => {
                let item = self.json(depth + 1);
                Json::Repeat(Box::new(item), self.short(REPEAT_MAX))
            }
        }
    }

    fn items(&mut self, depth: usize) -> usize {
        if depth >= DEPTH_MAX {
            0
        } else {
            self.pick(usize::from(ITEMS_MAX) + 1)
        }
    }

    fn step(&mut self) -> Step {
        let method = self.byte();
        let target = match self.pick(2) {
            0 => {
                let route = self.byte();
                let segments = (0..placeholders(route)).map(|_| self.text()).collect();
                let len = self.pick(usize::from(ITEMS_MAX) + 1);
                let query = (0..len)
                    .map(|_| {
                        let name = self.text();
                        (name, self.text())
                    })
                    .collect();
                Target::Route {
                    route,
                    segments,
                    query,
                }
            }
            _ => Target::Raw(self.bytes(RAW_MAX)),
        };
        let auth = match self.pick(6) {
            0 => Auth::None,
            1 => Auth::Held(self.byte()),
            2 => Auth::Obtained(self.byte()),
            3 => {
                let held = self.byte();
                Auth::WrongSecret(held, self.text())
            }
            4 => Auth::Bearer(self.text()),
            _ => Auth::Raw(self.text()),
        };
        let signature = match self.pick(6) {
            0 => Signature::None,
            1 => Signature::Valid,
            2 => Signature::Skewed(self.byte()),
            3 => Signature::ReusedNonce,
            4 => Signature::OtherBody,
            _ => {
                let timestamp = self.text();
                let nonce = self.text();
                Signature::Raw(timestamp, nonce, self.text())
            }
        };
        let idempotency_key = self.option_text();
        let request_id = self.option_text();
        let content_type = self.option_text();
        let extra_header = (self.pick(2) == 1).then(|| {
            let name = self.text();
            (name, self.text())
        });
        let peer = self.byte();
        let body = match self.pick(4) {
            0 => BodyPlan::Empty,
            1 => BodyPlan::Json(self.json(0)),
            2 => BodyPlan::Raw(self.long_bytes(RAW_BODY_MAX)),
            _ => {
                let fill = self.byte();
                BodyPlan::Large(fill, self.byte())
            }
        };
        Step {
            method,
            target,
            auth,
            signature,
            idempotency_key,
            request_id,
            content_type,
            extra_header,
            peer,
            body,
        }
    }
}

/// The number of `{…}` segments of `ROUTES[route % len]`.
fn placeholders(route: u8) -> usize {
    let (_, template, _) = ROUTES[usize::from(route) % ROUTES.len()];
    template.split('/').filter(|s| s.starts_with('{')).count()
}

/// Writes the bytes that [`Reader`] reads back as the same choices.
#[derive(Default)]
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn pick(&mut self, choice: usize) {
        self.out.push(u8::try_from(choice).unwrap_or(u8::MAX));
    }

    fn byte(&mut self, byte: u8) {
        self.out.push(byte);
    }

    fn short(&mut self, value: u16) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(RAW_MAX);
        self.pick(len);
        self.out.extend_from_slice(&bytes[..len]);
    }

    fn long_bytes(&mut self, bytes: &[u8]) {
        let len = bytes.len().min(usize::from(RAW_BODY_MAX));
        self.short(u16::try_from(len).unwrap_or(RAW_BODY_MAX));
        self.out.extend_from_slice(&bytes[..len]);
    }

    fn text(&mut self, text: &Text) {
        match text {
            Text::Word(n) => {
                self.pick(0);
                self.byte(*n);
            }
            Text::Raw(bytes) => {
                self.pick(1);
                self.bytes(bytes);
            }
            Text::Id(kind, n) => {
                self.pick(2);
                self.pick(kind.index());
                self.byte(*n);
            }
            Text::Code(n) => {
                self.pick(3);
                self.byte(*n);
            }
            Text::Long(unit, count) => {
                self.pick(4);
                self.byte(*unit);
                self.short(*count);
            }
        }
    }

    fn option_text(&mut self, text: Option<&Text>) {
        match text {
            None => self.pick(0),
            Some(text) => {
                self.pick(1);
                self.text(text);
            }
        }
    }

    fn json(&mut self, json: &Json) {
        match json {
            Json::Null => self.pick(0),
            Json::Bool(b) => {
                self.pick(1);
                self.pick(usize::from(*b));
            }
            Json::Number(n) => {
                self.pick(2);
                self.byte(*n);
            }
            Json::Str(text) => {
                self.pick(3);
                self.text(text);
            }
            Json::Array(items) => {
                self.pick(4);
                self.pick(items.len());
                for item in items {
                    self.json(item);
                }
            }
            Json::Object(members) => {
                self.pick(5);
                self.pick(members.len());
                for (key, value) in members {
                    self.text(key);
                    self.json(value);
                }
            }
            Json::Repeat(item, count) => {
                self.pick(6);
                self.json(item);
                self.short(*count);
            }
        }
    }

    fn step(&mut self, step: &Step) {
        self.byte(step.method);
        match &step.target {
            Target::Route {
                route,
                segments,
                query,
            } => {
                self.pick(0);
                self.byte(*route);
                for segment in segments {
                    self.text(segment);
                }
                self.pick(query.len());
                for (name, value) in query {
                    self.text(name);
                    self.text(value);
                }
            }
            Target::Raw(bytes) => {
                self.pick(1);
                self.bytes(bytes);
            }
        }
        match &step.auth {
            Auth::None => self.pick(0),
            Auth::Held(n) => {
                self.pick(1);
                self.byte(*n);
            }
            Auth::Obtained(n) => {
                self.pick(2);
                self.byte(*n);
            }
            Auth::WrongSecret(n, text) => {
                self.pick(3);
                self.byte(*n);
                self.text(text);
            }
            Auth::Bearer(text) => {
                self.pick(4);
                self.text(text);
            }
            Auth::Raw(text) => {
                self.pick(5);
                self.text(text);
            }
        }
        match &step.signature {
            Signature::None => self.pick(0),
            Signature::Valid => self.pick(1),
            Signature::Skewed(n) => {
                self.pick(2);
                self.byte(*n);
            }
            Signature::ReusedNonce => self.pick(3),
            Signature::OtherBody => self.pick(4),
            Signature::Raw(timestamp, nonce, signature) => {
                self.pick(5);
                self.text(timestamp);
                self.text(nonce);
                self.text(signature);
            }
        }
        self.option_text(step.idempotency_key.as_ref());
        self.option_text(step.request_id.as_ref());
        self.option_text(step.content_type.as_ref());
        match &step.extra_header {
            None => self.pick(0),
            Some((name, value)) => {
                self.pick(1);
                self.text(name);
                self.text(value);
            }
        }
        self.byte(step.peer);
        match &step.body {
            BodyPlan::Empty => self.pick(0),
            BodyPlan::Json(json) => {
                self.pick(1);
                self.json(json);
            }
            BodyPlan::Raw(bytes) => {
                self.pick(2);
                self.long_bytes(bytes);
            }
            BodyPlan::Large(fill, size) => {
                self.pick(3);
                self.byte(*fill);
                self.byte(*size);
            }
        }
    }
}

impl Plan {
    /// The plan the fuzzer's bytes stand for (any bytes make one).
    pub fn decode(data: &[u8]) -> Plan {
        let mut reader = Reader {
            u: Unstructured::new(data),
        };
        let count = 1 + reader.pick(STEPS_MAX);
        Plan {
            steps: (0..count).map(|_| reader.step()).collect(),
        }
    }

    /// Bytes that [`Plan::decode`] reads back as this plan (for seeds; the plan must
    /// stay within the decoder's limits).
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.pick(self.steps.len().clamp(1, STEPS_MAX) - 1);
        for step in self.steps.iter().take(STEPS_MAX) {
            writer.step(step);
        }
        writer.out
    }
}

// ---------------------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------------------

/// The fixture's API keys, in the order `Auth::Held` names them.
pub const HELD: &[&str] = &[
    "acme admin",
    "acme ann (requester)",
    "acme bob (approver)",
    "acme bea (approver)",
    "acme cat (authorizer)",
    "acme dan (executor)",
    "acme rex (releaser)",
    "acme eve (treasurer)",
    "acme aud (auditor)",
    "acme admin's hmac key (scoped; 127.0.0.0/8 and ::1 only)",
    "acme aud's key scoped to ledger.read",
    "globex admin",
];
/// `HELD` indices.
pub mod held {
    /// acme's administrator.
    pub const ADMIN: u8 = 0;
    /// Requester.
    pub const ANN: u8 = 1;
    /// Approver.
    pub const BOB: u8 = 2;
    /// Approver.
    pub const BEA: u8 = 3;
    /// Authorizer.
    pub const CAT: u8 = 4;
    /// Executor.
    pub const DAN: u8 = 5;
    /// Releaser.
    pub const REX: u8 = 6;
    /// Treasurer.
    pub const EVE: u8 = 7;
    /// Auditor.
    pub const AUD: u8 = 8;
    /// The administrator's HMAC-signing key.
    pub const HMAC: u8 = 9;
    /// The auditor's key scoped to `ledger.read`.
    pub const SCOPED: u8 = 10;
    /// globex's administrator.
    pub const GLOBEX: u8 = 11;
}

/// The cast of acme: name and role (the administrator comes first, without a role
/// granted).
const CAST: [(&str, &str); 8] = [
    ("ann", "requester"),
    ("bob", "approver"),
    ("bea", "approver"),
    ("cat", "authorizer"),
    ("dan", "executor"),
    ("rex", "releaser"),
    ("eve", "treasurer"),
    ("aud", "auditor"),
];

/// An API key the fixture holds, and its person.
#[derive(Debug, Clone)]
struct Held {
    tenant: TenantId,
    user: PrincipalId,
    /// `<key_id>.<secret>`
    token: String,
    /// The person's raw TOTP secret.
    totp: Vec<u8>,
    /// The TOTP secret as the redemption showed it (base32).
    totp_shown: String,
}

impl Held {
    fn key_id(&self) -> &str {
        self.token.split_once('.').map_or("", |(id, _)| id)
    }

    fn secret(&self) -> &str {
        self.token.split_once('.').map_or("", |(_, secret)| secret)
    }
}

/// The service and what the fixture made in it.
pub struct World {
    app: axum::Router,
    state: AppState,
    tenants: Vec<TenantId>,
    held: Vec<Held>,
    /// Ids by `IdKind::index`.
    ids: Vec<Vec<String>>,
    /// Texts no answer may hold.
    secrets: Vec<String>,
    /// acme's cast (a `DELETE` naming one is not sent).
    cast: Vec<String>,
    /// Keeps the data directory.
    _dir: tempfile::TempDir,
}

/// The runtime and the world it serves.
pub struct Fixture {
    runtime: tokio::runtime::Runtime,
    world: World,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}

/// Limits high enough that the fuzzer does not run into them.
const LIMITS: LimitConfig = LimitConfig {
    per_key: 1_000_000,
    per_ip: 1_000_000,
    sensitive_per_minute: 1_000_000,
};

/// Longest a request (with reading its answer) may take before it counts as a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a streamed answer (Server-Sent Events) is read after its last frame.
const STREAM_IDLE: Duration = Duration::from_millis(5);
/// How much of an answer is read.
const ANSWER_BYTES_MAX: usize = 2 * 1024 * 1024;

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// `METHOD path`.
    pub request: String,
    /// `None`: not sent (the plan made no valid request, or a `DELETE` of the cast).
    pub status: Option<u16>,
    /// The problem's `code`, for an error.
    pub code: Option<String>,
    /// The problem's `detail`, for an error.
    pub detail: Option<String>,
}

/// An answer, read.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn fixture_failed(what: &str, answer: &Answer) -> ! {
    panic!(
        "fixture: {what}: {} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    )
}

/// The fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    // One thread: the harness's own. Spawned tasks (the writers, the committer) run
    // while a request is being answered.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("fixture: tokio runtime: {e}"),
    };
    // TMPDIR=/dev/shm makes the store's commits (synchronous=FULL) cheap.
    remove_stale_dirs(&std::env::temp_dir());
    let dir = match tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => panic!("fixture: temp dir: {e}"),
    };
    let storage = Storage {
        data_dir: dir.path().join("data"),
        database_url: None,
        keys_dir: None,
    };
    let world = runtime.block_on(async {
        let state = match AppState::build(&storage, LIMITS).await {
            Ok(mut state) => {
                state.read_wait = Duration::ZERO;
                state
            }
            Err(e) => panic!("fixture: app state: {e}"),
        };
        let mut world = World {
            app: ledger_api::app(state.clone()),
            state,
            tenants: Vec::new(),
            held: Vec::new(),
            ids: vec![Vec::new(); IdKind::ALL.len()],
            secrets: Vec::new(),
            cast: Vec::new(),
            _dir: dir,
        };
        populate(&mut world).await;
        world
    });
    Fixture { runtime, world }
}

/// The data directories' prefix; the process id follows.
const DIR_PREFIX: &str = "ledger-fuzz-";

/// Removes the data directories of fixtures whose process is gone: the fixture is a
/// static, never dropped, so each process leaves its directory behind. (Where `/proc`
/// tells which processes live.)
fn remove_stale_dirs(base: &std::path::Path) {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !proc.join(pid.to_string()).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A request the fixture makes (no idempotency key: nothing of it can be replayed).
async fn call(
    world: &World,
    method: Method,
    token: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map_or_else(Vec::new, |v| v.to_string().into_bytes());
    let mut request = match builder
        .header("content-type", "application/json")
        .body(Body::from(body))
    {
        Ok(request) => request,
        Err(e) => panic!("fixture: request {path}: {e}"),
    };
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(PEERS[0], 40_000)));
    let response = match world.app.clone().oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, ANSWER_BYTES_MAX).await {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => panic!("fixture: answer to {path}: {e}"),
    };
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn text_of(value: &Value, field: &str) -> String {
    match value[field].as_str() {
        Some(text) => text.to_owned(),
        None => panic!("fixture: no {field} in {value}"),
    }
}

/// Creates a tenant and its administrator as `tenant create` does; the invite.
async fn create_tenant(state: &AppState, slug: &str) -> String {
    let tenant: TenantId = match slug.parse() {
        Ok(tenant) => tenant,
        Err(e) => panic!("fixture: tenant {slug}: {e:?}"),
    };
    let admin: PrincipalId = match ledger_api::util::random_id("usr_", 16).parse() {
        Ok(admin) => admin,
        Err(e) => panic!("fixture: admin id: {e:?}"),
    };
    let operator: PrincipalId = match "svc_operator".parse() {
        Ok(operator) => operator,
        Err(e) => panic!("fixture: operator id: {e:?}"),
    };
    let submission = Submission {
        actor: operator,
        scopes: None,
        commands: vec![Command::CreateTenant {
            name: format!("{slug} Ltd"),
            admin: Some(admin.clone()),
        }],
        denied: None,
        id_seed: None,
        recheck: false,
        request_id: None,
        view: Box::new(|_, _| Value::Null),
        peek: None,
    };
    if let Err(e) = state.writers.submit(&tenant, submission).await {
        panic!("fixture: create {slug}: {e}");
    }
    match ledger_api::routes::users::create_invite(state, &tenant, &admin).await {
        Ok(invite) => invite,
        Err(e) => panic!("fixture: invite for {slug}: {e}"),
    }
}

/// The raw TOTP secret of `user`, from the store.
async fn totp_secret(state: &AppState, tenant: &TenantId, user: &PrincipalId) -> Vec<u8> {
    let record = match state
        .get::<TotpRecord>(tenant, kind::TOTP, user.as_str())
        .await
    {
        Ok(Some((_, record))) => record,
        Ok(None) => panic!("fixture: no TOTP enrolment for {user}"),
        Err(e) => panic!("fixture: TOTP enrolment of {user}: {e}"),
    };
    match state.open(tenant, user.as_str(), "totp_secret", &record.secret) {
        Ok(secret) => secret,
        Err(e) => panic!("fixture: TOTP secret of {user}: {e}"),
    }
}

/// A code `held` has not used yet, within the window if there is one (else the current
/// step's), with any lockout lifted first, so that a fuzzed wrong code earlier does not
/// keep the money-moving paths shut.
async fn fresh_code(state: &AppState, held: &Held) -> String {
    let now = u64::try_from(ledger_api::util::now().unix_seconds()).unwrap_or(0)
        / ledger_api::totp::STEP_SECONDS;
    let mut last_step = 0;
    if let Ok(Some((version, mut record))) = state
        .get::<TotpRecord>(&held.tenant, kind::TOTP, held.user.as_str())
        .await
    {
        last_step = record.last_step;
        if record.failures > 0 || record.locked_until.is_some() {
            record.failures = 0;
            record.locked_until = None;
            let _ = state
                .update(
                    &held.tenant,
                    kind::TOTP,
                    held.user.as_str(),
                    version,
                    &record,
                )
                .await;
        }
    }
    let step = [now.saturating_sub(1), now, now + 1]
        .into_iter()
        .find(|step| *step > last_step)
        .unwrap_or(now);
    ledger_api::totp::code_at_step(&held.totp, step).unwrap_or_default()
}

/// Redeems an invite through the service and confirms the enrolment with a first code.
async fn enrol(world: &World, invite: &str) -> Held {
    let answer = call(
        world,
        Method::POST,
        None,
        "/v1/invites/redeem",
        Some(json!({ "invite": invite })),
    )
    .await;
    if answer.status != StatusCode::CREATED {
        fixture_failed("redeem", &answer);
    }
    let body = answer.json();
    let user: PrincipalId = match text_of(&body, "user").parse() {
        Ok(user) => user,
        Err(e) => panic!("fixture: user id: {e:?}"),
    };
    let token = text_of(&body, "api_key");
    let totp_shown = text_of(&body, "totp_secret");
    let tenant = match world
        .state
        .store
        .credential_tenant(invite.split('.').next().unwrap_or(""))
        .await
    {
        Ok(Some(tenant)) => tenant,
        other => panic!("fixture: the invite's tenant: {other:?}"),
    };
    let totp = totp_secret(&world.state, &tenant, &user).await;
    let held = Held {
        tenant,
        user,
        token,
        totp,
        totp_shown,
    };
    let code = fresh_code(&world.state, &held).await;
    let answer = call(
        world,
        Method::POST,
        Some(&held.token),
        "/v1/me/totp/confirm",
        Some(json!({ "code": code })),
    )
    .await;
    if answer.status != StatusCode::OK {
        fixture_failed("confirm TOTP", &answer);
    }
    held
}

async fn post(world: &World, who: &Held, path: &str, body: Value, expect: StatusCode) -> Value {
    let answer = call(world, Method::POST, Some(&who.token), path, Some(body)).await;
    if answer.status != expect {
        fixture_failed(path, &answer);
    }
    answer.json()
}

async fn populate(world: &mut World) {
    let acme_invite = create_tenant(&world.state, "acme").await;
    let admin = enrol(world, &acme_invite).await;
    let mut invites = vec![acme_invite];
    let mut cast = Vec::new();
    for (name, _) in CAST {
        let body = post(
            world,
            &admin,
            "/v1/users",
            json!({ "name": name }),
            StatusCode::CREATED,
        )
        .await;
        let invite = text_of(&body, "invite");
        cast.push(enrol(world, &invite).await);
        invites.push(invite);
    }
    let grants: Vec<Value> = CAST
        .iter()
        .zip(&cast)
        .map(|((_, role), held)| json!({"user": held.user, "role": role}))
        .collect();
    let code = fresh_code(&world.state, &admin).await;
    post(
        world,
        &admin,
        "/v1/roles",
        json!({"grants": grants, "otp": code}),
        StatusCode::OK,
    )
    .await;
    let [ann, bob, _bea, cat, _dan, _rex, eve, aud] = match <[Held; 8]>::try_from(cast.clone()) {
        Ok(cast) => cast,
        Err(_) => unreachable!("eight people"),
    };

    // Money: accounts, funds, a payee, payouts left requested, approved, authorized.
    let mut accounts = Vec::new();
    for (currency, amount) in [("EUR", "1000000.00"), ("JPY", "50000000")] {
        let body = post(
            world,
            &eve,
            "/v1/accounts",
            json!({"currency": currency, "name": currency}),
            StatusCode::CREATED,
        )
        .await;
        let account = text_of(&body, "account");
        post(
            world,
            &eve,
            &format!("/v1/accounts/{account}/deposits"),
            json!({"amount": amount, "reference": "funding"}),
            StatusCode::CREATED,
        )
        .await;
        accounts.push(account);
    }
    let body = post(
        world,
        &admin,
        "/v1/payees",
        json!({"name": "Lark", "iban": "DE89370400440532013000"}),
        StatusCode::CREATED,
    )
    .await;
    let payee = text_of(&body, "payee");
    let mut payouts = Vec::new();
    for amount in ["10.00", "20.00", "30.00"] {
        let body = post(
            world,
            &ann,
            "/v1/payouts",
            json!({"account": accounts[0], "payee": payee, "amount": amount, "currency": "EUR", "reference": "fixture"}),
            StatusCode::CREATED,
        )
        .await;
        payouts.push(text_of(&body, "payout"));
    }
    for payout in &payouts[1..] {
        post(
            world,
            &bob,
            &format!("/v1/payouts/{payout}/approve"),
            json!({}),
            StatusCode::OK,
        )
        .await;
    }
    let code = fresh_code(&world.state, &cat).await;
    post(
        world,
        &cat,
        &format!("/v1/payouts/{}/authorize", payouts[2]),
        json!({ "otp": code }),
        StatusCode::OK,
    )
    .await;

    // More keys: the administrator's HMAC-signing key (loopback only), the auditor's
    // read-only key.
    let code = fresh_code(&world.state, &admin).await;
    let body = post(
        world,
        &admin,
        "/v1/me/api-keys",
        json!({
            "scopes": ["user.manage", "account.manage", "payee.manage", "ledger.read", "webhook.manage"],
            "allowed_ips": ["127.0.0.0/8", "::1"],
            "hmac": true,
            "otp": code,
        }),
        StatusCode::CREATED,
    )
    .await;
    let hmac = Held {
        token: text_of(&body, "api_key"),
        ..admin.clone()
    };
    let code = fresh_code(&world.state, &aud).await;
    let body = post(
        world,
        &aud,
        "/v1/me/api-keys",
        json!({"scopes": ["ledger.read"], "otp": code}),
        StatusCode::CREATED,
    )
    .await;
    let scoped = Held {
        token: text_of(&body, "api_key"),
        ..aud.clone()
    };
    let body = post(
        world,
        &admin,
        "/v1/webhooks",
        json!({"url": "https://hooks.example.com/in", "events": ["*"], "description": "fixture"}),
        StatusCode::CREATED,
    )
    .await;
    let webhook = text_of(&body, "id");

    // The other tenant.
    let globex_invite = create_tenant(&world.state, "globex").await;
    let globex = enrol(world, &globex_invite).await;
    invites.push(globex_invite);

    world.tenants = vec![admin.tenant.clone(), globex.tenant.clone()];
    world.cast = std::iter::once(&admin)
        .chain(&cast)
        .map(|held| held.user.to_string())
        .collect();
    let mut held = vec![admin];
    held.extend(cast);
    held.extend([hmac, scoped, globex]);
    world.secrets = held
        .iter()
        .map(|h| h.secret().to_owned())
        .chain(held.iter().map(|h| h.totp_shown.clone()))
        .collect();
    world.ids[IdKind::Payout.index()] = payouts;
    world.ids[IdKind::Account.index()] = accounts;
    world.ids[IdKind::Payee.index()] = vec![payee];
    let mut users: Vec<String> = Vec::new();
    for held in &held {
        if !users.contains(&held.user.to_string()) {
            users.push(held.user.to_string());
        }
    }
    world.ids[IdKind::User.index()] = users;
    world.ids[IdKind::Webhook.index()] = vec![webhook];
    world.ids[IdKind::Invite.index()] = invites;
    world.held = held;
    project(world).await;
}

/// Brings every tenant's read models up to its head.
async fn project(world: &World) {
    for _ in 0..10_000 {
        match world.state.store.project_many(&world.tenants, 1000).await {
            Ok(steps) => {
                if steps
                    .iter()
                    .all(|step| matches!(step, ProjectStep::CaughtUp { .. }))
                {
                    return;
                }
            }
            Err(e) => panic!("projection of the fixture's tenants: {e}"),
        }
    }
    panic!("the projection does not catch up");
}

// ---------------------------------------------------------------------------------------
// Running a plan
// ---------------------------------------------------------------------------------------

/// What the input's earlier answers named.
#[derive(Default)]
struct Obtained {
    ids: Vec<Vec<String>>,
    tokens: Vec<String>,
}

impl Obtained {
    const PER_KIND_MAX: usize = 16;

    fn add(&mut self, kind: IdKind, id: &str) {
        if self.ids.is_empty() {
            self.ids = vec![Vec::new(); IdKind::ALL.len()];
        }
        let list = &mut self.ids[kind.index()];
        if list.len() < Self::PER_KIND_MAX && !list.iter().any(|known| known == id) {
            list.push(id.to_owned());
        }
    }

    /// Collects ids (and new API keys) from an answer: those the fixture does not know
    /// already, never one of its keys.
    fn harvest(&mut self, value: &Value, world: &World, depth: usize) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    if let Value::String(text) = item {
                        let kind = match key.as_str() {
                            "payout" => Some(IdKind::Payout),
                            "account" => Some(IdKind::Account),
                            "payee" => Some(IdKind::Payee),
                            "user" => Some(IdKind::User),
                            "invite" => Some(IdKind::Invite),
                            "id" if text.starts_with("wh_") => Some(IdKind::Webhook),
                            "id" if text.starts_with("key_") => Some(IdKind::Key),
                            _ => None,
                        };
                        let known = |kind: IdKind| {
                            world.ids[kind.index()].iter().any(|id| id == text)
                                || world.held.iter().any(|h| h.key_id() == text)
                        };
                        if let Some(kind) = kind.filter(|kind| !known(*kind)) {
                            self.add(kind, text);
                        }
                        if key == "api_key" && self.tokens.len() < Self::PER_KIND_MAX {
                            self.tokens.push(text.clone());
                        }
                    } else if depth < 3 {
                        self.harvest(item, world, depth + 1);
                    }
                }
            }
            Value::Array(items) if depth < 3 => {
                for item in items.iter().take(Self::PER_KIND_MAX) {
                    self.harvest(item, world, depth + 1);
                }
            }
            _ => {}
        }
    }
}

/// Percent-encodes all but the unreserved characters.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The most bytes of JSON one request's body is built to: twice the body limit (larger
/// bodies take the same path, and `BodyPlan::Large` goes past the drain limit).
const JSON_BYTES_MAX: usize = 2 * BODY_MAX;

/// The texts of one request.
struct Texts<'a> {
    world: &'a World,
    obtained: &'a Obtained,
    actor: Option<&'a Held>,
    /// Bytes of JSON still to be built ([`JSON_BYTES_MAX`] per request): nested
    /// `Repeat`s and `Long`s would otherwise multiply past any memory.
    budget: AtomicUsize,
}

impl Texts<'_> {
    /// Takes up to `wanted` bytes of the budget; what it got.
    fn spend(&self, wanted: usize) -> usize {
        let left = self.budget.load(Ordering::Relaxed);
        let got = wanted.min(left);
        self.budget.store(left - got, Ordering::Relaxed);
        got
    }

    /// A string of JSON within the budget.
    async fn json_string(&self, text: &Text) -> String {
        let mut string = match text {
            Text::Long(unit, count) => {
                let unit = word(*unit);
                let room = self.budget.load(Ordering::Relaxed) / unit.len().max(1);
                unit.repeat(usize::from(*count).min(room))
            }
            Text::Word(_) | Text::Raw(_) | Text::Id(..) | Text::Code(_) => self.string(text).await,
        };
        let mut len = self
            .spend(string.len() + 2)
            .saturating_sub(2)
            .min(string.len());
        while !string.is_char_boundary(len) {
            len -= 1;
        }
        string.truncate(len);
        string
    }

    async fn bytes(&self, text: &Text) -> Vec<u8> {
        match text {
            Text::Word(n) => word(*n).as_bytes().to_vec(),
            Text::Raw(bytes) => bytes.clone(),
            Text::Id(kind, n) => {
                let fixed = &self.world.ids[kind.index()];
                let obtained = self.obtained.ids.get(kind.index());
                let all: Vec<&String> =
                    fixed.iter().chain(obtained.into_iter().flatten()).collect();
                match all.len() {
                    0 => b"none".to_vec(),
                    len => all[len - 1 - usize::from(*n) % len].as_bytes().to_vec(),
                }
            }
            Text::Code(n) => {
                let held = match n {
                    0 => self.actor.unwrap_or(&self.world.held[0]),
                    n => &self.world.held[usize::from(n - 1) % self.world.held.len()],
                };
                fresh_code(&self.world.state, held).await.into_bytes()
            }
            Text::Long(unit, count) => word(*unit).repeat(usize::from(*count)).into_bytes(),
        }
    }

    async fn string(&self, text: &Text) -> String {
        String::from_utf8_lossy(&self.bytes(text).await).into_owned()
    }

    /// In a path or query: words and ids as they are, anything else percent-encoded.
    async fn url_part(&self, text: &Text) -> String {
        let bytes = self.bytes(text).await;
        match text {
            Text::Word(_) | Text::Id(..) | Text::Code(_) => {
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Text::Raw(_) | Text::Long(..) => percent_encode(&bytes, ENCODE).to_string(),
        }
    }

    fn json<'b>(
        &'b self,
        json: &'b Json,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Value> + Send + 'b>> {
        Box::pin(async move {
            if self.spend(4) < 4 {
                return Value::Null;
            }
            match json {
                Json::Null => Value::Null,
                Json::Bool(b) => Value::Bool(*b),
                Json::Number(n) => number(*n),
                Json::Str(text) => Value::String(self.json_string(text).await),
                Json::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        out.push(self.json(item).await);
                    }
                    Value::Array(out)
                }
                Json::Object(members) => {
                    let mut out = serde_json::Map::new();
                    for (key, value) in members {
                        let key = self.json_string(key).await;
                        out.insert(key, self.json(value).await);
                    }
                    Value::Object(out)
                }
                Json::Repeat(item, count) => {
                    let item = self.json(item).await;
                    let size = item.to_string().len() + 1;
                    let copies = self.spend(size * usize::from(*count)) / size;
                    Value::Array(vec![item; copies])
                }
            }
        })
    }
}

/// A request as sent, for the checks and the failure message.
struct Sent {
    /// Path, query, body and headers but `Authorization`, as text: what the client
    /// itself sent (and may get back, as its own `X-Request-Id`).
    carried: String,
    summary: String,
    method: Method,
    path: String,
    query: String,
    request_id: Option<String>,
}

/// Nonces of valid signatures, fresh in this process.
static NONCES: AtomicU64 = AtomicU64::new(0);

fn sign(
    secret: &str,
    timestamp: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(e) => unreachable!("HMAC takes any key: {e}"),
    };
    mac.update(signing_string(timestamp, nonce, method, path, body).as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn header_value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

async fn build(world: &World, obtained: &Obtained, step: &Step) -> Option<(Request<Body>, Sent)> {
    let actor = match &step.auth {
        Auth::Held(n) | Auth::WrongSecret(n, _) => {
            Some(&world.held[usize::from(*n) % world.held.len()])
        }
        Auth::None | Auth::Obtained(_) | Auth::Bearer(_) | Auth::Raw(_) => None,
    };
    let texts = Texts {
        world,
        obtained,
        actor,
        budget: AtomicUsize::new(JSON_BYTES_MAX),
    };

    // Method and path.
    let (route_method, uri_text) = match &step.target {
        Target::Route {
            route,
            segments,
            query,
        } => {
            let (method, template, _) = ROUTES[usize::from(*route) % ROUTES.len()];
            let mut segments = segments.iter();
            let mut path = String::new();
            for piece in template.split('/').skip(1) {
                path.push('/');
                if piece.starts_with('{') {
                    match segments.next() {
                        Some(text) => path.push_str(&texts.url_part(text).await),
                        None => path.push('x'),
                    }
                } else {
                    path.push_str(piece);
                }
            }
            if !query.is_empty() {
                path.push('?');
                for (n, (name, value)) in query.iter().enumerate() {
                    if n > 0 {
                        path.push('&');
                    }
                    path.push_str(&texts.url_part(name).await);
                    path.push('=');
                    path.push_str(&texts.url_part(value).await);
                }
            }
            (method.to_ascii_uppercase(), path)
        }
        Target::Raw(bytes) => (
            "GET".to_owned(),
            format!("/{}", String::from_utf8_lossy(bytes)),
        ),
    };
    let method = match step.method {
        0 => route_method,
        n => METHODS[usize::from(n - 1) % METHODS.len()].to_owned(),
    };
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let uri: Uri = uri_text.parse().ok()?;
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    if method == Method::DELETE && world.cast.iter().any(|user| path.contains(user.as_str())) {
        return None; // the fixture's people keep their roles
    }

    // Body.
    let body: Vec<u8> = match &step.body {
        BodyPlan::Empty => Vec::new(),
        BodyPlan::Json(json) => texts.json(json).await.to_string().into_bytes(),
        BodyPlan::Raw(bytes) => bytes.clone(),
        BodyPlan::Large(fill, size) => {
            vec![*fill; LARGE_SIZES[usize::from(*size) % LARGE_SIZES.len()]]
        }
    };

    // Headers.
    let mut headers = HeaderMap::new();
    let authorization: Option<Vec<u8>> = match &step.auth {
        Auth::None => None,
        Auth::Held(_) => actor.map(|held| format!("Bearer {}", held.token).into_bytes()),
        Auth::Obtained(n) => match obtained.tokens.len() {
            0 => None,
            len => Some(
                format!(
                    "Bearer {}",
                    obtained.tokens[len - 1 - usize::from(*n) % len]
                )
                .into_bytes(),
            ),
        },
        Auth::WrongSecret(_, text) => {
            let key_id = actor.map_or("", Held::key_id);
            let mut value = format!("Bearer {key_id}.").into_bytes();
            value.extend(texts.bytes(text).await);
            Some(value)
        }
        Auth::Bearer(text) => {
            let mut value = b"Bearer ".to_vec();
            value.extend(texts.bytes(text).await);
            Some(value)
        }
        Auth::Raw(text) => Some(texts.bytes(text).await),
    };
    if let Some(value) = authorization.as_deref().and_then(header_value) {
        headers.append("authorization", value);
    }
    let hmac = &world.held[usize::from(held::HMAC)];
    let now = ledger_api::util::now().unix_seconds();
    let signed = |timestamp: i64, nonce: &str, body: &[u8]| {
        let timestamp = timestamp.to_string();
        let signature = sign(
            hmac.secret(),
            &timestamp,
            nonce,
            method.as_str(),
            &path_and_query,
            body,
        );
        (
            timestamp.into_bytes(),
            nonce.as_bytes().to_vec(),
            signature.into_bytes(),
        )
    };
    let fresh_nonce = || format!("n-{}", NONCES.fetch_add(1, Ordering::Relaxed));
    let signature = match &step.signature {
        Signature::None => None,
        Signature::Valid => Some(signed(now, &fresh_nonce(), &body)),
        Signature::Skewed(n) => Some(signed(
            now.saturating_add(SKEWS[usize::from(*n) % SKEWS.len()]),
            &fresh_nonce(),
            &body,
        )),
        Signature::ReusedNonce => Some(signed(now, "reused", &body)),
        Signature::OtherBody => {
            let mut other = body.clone();
            other.push(b'x');
            Some(signed(now, &fresh_nonce(), &other))
        }
        Signature::Raw(timestamp, nonce, signature) => Some((
            texts.bytes(timestamp).await,
            texts.bytes(nonce).await,
            texts.bytes(signature).await,
        )),
    };
    if let Some((timestamp, nonce, signature)) = signature {
        for (name, value) in [
            ("x-ledger-timestamp", timestamp),
            ("x-ledger-nonce", nonce),
            ("x-ledger-signature", signature),
        ] {
            if let Some(value) = header_value(&value) {
                headers.append(name, value);
            }
        }
    }
    let mut request_id = None;
    for (name, text) in [
        ("idempotency-key", &step.idempotency_key),
        ("x-request-id", &step.request_id),
        ("content-type", &step.content_type),
    ] {
        if let Some(text) = text {
            let bytes = texts.bytes(text).await;
            if let Some(value) = header_value(&bytes) {
                if name == "x-request-id" {
                    request_id = Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                headers.append(name, value);
            }
        }
    }
    if let Some((name, value)) = &step.extra_header {
        let name = HeaderName::from_bytes(&texts.bytes(name).await).ok();
        let value = header_value(&texts.bytes(value).await);
        if let (Some(name), Some(value)) = (name, value) {
            // The framing is the server's (hyper's) business, not the service's.
            if !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "host"
            ) {
                if name == "x-request-id" && request_id.is_none() {
                    request_id = value.to_str().ok().map(str::to_owned);
                }
                headers.append(name, value);
            }
        }
    }

    let summary = format!(
        "{method} {path_and_query}\n{}\nbody ({} bytes): {}",
        headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect::<Vec<_>>()
            .join("\n"),
        body.len(),
        String::from_utf8_lossy(&body[..body.len().min(2000)]),
    );
    let mut carried = format!("{path_and_query}\n{}\n", String::from_utf8_lossy(&body));
    for (name, value) in &headers {
        if name != "authorization" {
            carried.push_str(&String::from_utf8_lossy(value.as_bytes()));
            carried.push('\n');
        }
    }
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let peer = PEERS[usize::from(step.peer) % PEERS.len()];
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(peer, 40_000)));
    Some((
        request,
        Sent {
            carried,
            summary,
            method,
            path,
            query,
            request_id,
        },
    ))
}

/// Reads an answer: all of it, or a stream until it pauses.
async fn read(response: axum::response::Response) -> Result<Answer, String> {
    let (parts, body) = response.into_parts();
    let streaming = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut frames = body.into_data_stream();
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_BYTES_MAX {
        let next = if streaming {
            match tokio::time::timeout(STREAM_IDLE, frames.next()).await {
                Ok(next) => next,
                Err(_) => break, // the stream waits for new events
            }
        } else {
            frames.next().await
        };
        match next {
            None => break,
            Some(Ok(frame)) => bytes.extend_from_slice(&frame),
            Some(Err(e)) => return Err(format!("the answer's body failed: {e}")),
        }
    }
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
    })
}

/// The routes whose 2xx answer means events were committed (`Ledger-Seq`).
const COMMANDS: &[(&str, &str)] = &[
    ("POST", "/v1/users"),
    ("POST", "/v1/invites/redeem"),
    ("POST", "/v1/users/{id}/roles"),
    ("DELETE", "/v1/users/{id}/roles/{role}"),
    ("POST", "/v1/roles"),
    ("POST", "/v1/me/api-keys"),
    ("DELETE", "/v1/me/api-keys/{id}"),
    ("POST", "/v1/accounts"),
    ("POST", "/v1/accounts/{id}/deposits"),
    ("POST", "/v1/payees"),
    ("POST", "/v1/payouts"),
    ("POST", "/v1/payouts/{id}"),
    ("POST", "/v1/payouts/{id}/approve"),
    ("POST", "/v1/payouts/{id}/reject"),
    ("POST", "/v1/payouts/{id}/authorize"),
    ("POST", "/v1/payouts/{id}/execute"),
    ("POST", "/v1/payouts/{id}/release"),
    ("POST", "/v1/payouts/{id}/fail"),
    ("POST", "/v1/payouts/{id}/cancel"),
    ("PUT", "/v1/policy/approvals"),
];

/// The route template `path` matches, as the router matches it (literal segments
/// before `{…}`).
fn matched_route(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    let fits = |template: &str, literal_only: bool| {
        let pieces: Vec<&str> = template.split('/').collect();
        pieces.len() == segments.len()
            && pieces.iter().zip(&segments).all(|(piece, segment)| {
                if piece.starts_with('{') {
                    !literal_only && !segment.is_empty()
                } else {
                    piece == segment
                }
            })
    };
    let templates = || ROUTES.iter().map(|(_, template, _)| *template);
    templates()
        .find(|t| fits(t, true))
        .or_else(|| templates().find(|t| fits(t, false)))
}

/// The statuses of DESIGN section 7 (503 only as [`check`] allows it).
const STATUSES: &[u16] = &[200, 201, 400, 401, 403, 404, 409, 413, 422, 429, 503];

/// Checks one answer; `Err` says what broke.
fn check(world: &World, built: &Sent, answer: &Answer, head: u64) -> Result<(), String> {
    let status = answer.status.as_u16();
    let problem: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let code = problem["code"].as_str().unwrap_or("");
    if answer.status.is_server_error() {
        // The query decoded as the service decodes it.
        let beyond_head = url::form_urlencoded::parse(built.query.as_bytes())
            .any(|(name, value)| name == "min_seq" && value.parse::<u64>().is_ok_and(|n| n > head));
        if !(status == 503 && code == "projection_behind" && beyond_head) {
            return Err(format!("a {status} answer"));
        }
    }
    if !STATUSES.contains(&status) {
        return Err(format!("status {status} is not one of DESIGN section 7"));
    }
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
    if answer.status.is_client_error() || answer.status.is_server_error() {
        if header("content-type") != Some("application/problem+json") {
            return Err(format!(
                "an error answered as {:?}, not application/problem+json",
                header("content-type")
            ));
        }
        if built.method != Method::HEAD {
            if code.is_empty() {
                return Err("an error without a code".into());
            }
            if problem["status"].as_u64() != Some(u64::from(status)) {
                return Err("the problem's status is not the answer's".into());
            }
        }
    }
    match (header("x-request-id"), &built.request_id) {
        (None, _) => return Err("no X-Request-Id".into()),
        (Some(id), _) if RequestId::parse(id).is_none() => {
            return Err(format!("X-Request-Id {id:?} is not acceptable"))
        }
        (Some(id), Some(sent)) if RequestId::parse(sent).is_some() && id != sent => {
            return Err(format!("X-Request-Id {id:?}, not the client's {sent:?}"));
        }
        (Some(_), _) => {}
    }
    if (status == 429 || status == 503 || code == "two_factor_locked")
        && header("retry-after").is_none()
    {
        return Err(format!("{status} {code} without Retry-After"));
    }
    if answer.status.is_success() && header("idempotent-replayed").is_none() {
        let command = matched_route(&built.path).is_some_and(|template| {
            COMMANDS
                .iter()
                .any(|(m, t)| *m == built.method.as_str() && *t == template)
        });
        if command && header(ledger_api::http::context::SEQ_HEADER).is_none() {
            return Err("a 2xx to a command, without Ledger-Seq: nothing committed?".into());
        }
    }
    // As text (lossy): str's substring search, rather than a comparison per offset.
    let body = String::from_utf8_lossy(&answer.body);
    let headers: Vec<String> = answer
        .headers
        .values()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    for secret in &world.secrets {
        let held =
            body.contains(secret.as_str()) || headers.iter().any(|h| h.contains(secret.as_str()));
        // libFuzzer learns the secrets from these very comparisons and sends them: what
        // the client sent itself does not count here (the canary below covers echoes).
        if held && !built.carried.contains(secret.as_str()) {
            return Err("the answer holds a secret of the fixture".into());
        }
    }
    if answer.status.is_client_error() && body.contains(CANARY) {
        return Err("an error answer echoes a value of the request (the canary)".into());
    }
    Ok(())
}

/// Runs a plan against the fixture; panics when an answer breaks a property.
pub fn run(plan: &Plan) -> Vec<Exchange> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let fixture = fixture();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    fixture.runtime.block_on(run_steps(&fixture.world, plan))
}

async fn run_steps(world: &World, plan: &Plan) -> Vec<Exchange> {
    let mut obtained = Obtained::default();
    let mut exchanges = Vec::new();
    for step in plan.steps.iter().take(STEPS_MAX) {
        let Some((request, sent)) = build(world, &obtained, step).await else {
            exchanges.push(Exchange {
                request: "(not sent)".into(),
                status: None,
                code: None,
                detail: None,
            });
            continue;
        };
        // Reads answer from the read models: bring them up to the head first.
        if sent.method == Method::GET || sent.method == Method::HEAD {
            project(world).await;
        }
        let exchange = async {
            let response = match world.app.clone().oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            read(response).await
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => panic!(
                "no answer within {REQUEST_TIMEOUT:?}\n--- request\n{}",
                sent.summary
            ),
            Ok(Err(e)) => panic!("{e}\n--- request\n{}", sent.summary),
            Ok(Ok(answer)) => answer,
        };
        let head = head_of_tenants(world).await;
        if let Err(broken) = check(world, &sent, &answer, head) {
            panic!(
                "{broken}\n--- request\n{}\n--- answer\n{} {:?}\n{}",
                sent.summary,
                answer.status,
                answer.headers,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(4000)]),
            );
        }
        let value = answer.json();
        if answer.status.is_success() {
            obtained.harvest(&value, world, 0);
        }
        exchanges.push(Exchange {
            request: format!("{} {}", sent.method, sent.path),
            status: Some(answer.status.as_u16()),
            code: value["code"].as_str().map(str::to_owned),
            detail: value["detail"].as_str().map(str::to_owned),
        });
    }
    exchanges
}

/// The highest head of the fixture's tenants.
async fn head_of_tenants(world: &World) -> u64 {
    let mut head = 0;
    for tenant in &world.tenants {
        if let Ok(seq) = world.state.writers.read(tenant, |_, head| head.seq).await {
            head = head.max(seq);
        }
    }
    head
}

/// `http_request`: the bytes as a plan of requests (see the module documentation).
pub fn http_request(data: &[u8]) -> Vec<Exchange> {
    run(&Plan::decode(data))
}
