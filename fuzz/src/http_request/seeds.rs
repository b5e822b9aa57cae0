//! The seed inputs of `http_request`: plans written by hand, one per area of the
//! service, with the statuses each request should get from a fresh fixture (a set where
//! a fresh TOTP step may have been used up by an earlier input, or an earlier run of the
//! same seed changed what the request finds).

use super::{
    held, Auth, BodyPlan, IdKind, Json, Plan, Signature, Step, Target, Text, SKEWS, WORDS,
};
use ledger_api::routes::ROUTES;

/// A seed: its name, its plan, and the statuses each of its requests may get.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The file name (without extension).
    pub name: &'static str,
    /// The requests.
    pub plan: Plan,
    /// Per request, the statuses it may get.
    pub expect: Vec<&'static [u16]>,
}

/// The dictionary word `word` (a seed naming a word not in it is a bug of the seed).
pub fn w(word: &str) -> Text {
    match WORDS.iter().position(|candidate| *candidate == word) {
        Some(index) => Text::Word(u8::try_from(index).unwrap_or(u8::MAX)),
        None => panic!("{word:?} is not in WORDS"),
    }
}

/// Raw text.
pub fn raw(text: &str) -> Text {
    Text::Raw(text.as_bytes().to_vec())
}

/// A JSON string of a dictionary word.
pub fn sw(word: &str) -> Json {
    Json::Str(w(word))
}

/// A JSON object whose keys are dictionary words.
pub fn object(members: Vec<(&str, Json)>) -> Json {
    Json::Object(members.into_iter().map(|(k, v)| (w(k), v)).collect())
}

/// An id of `kind`, `n`-th newest.
pub fn id(kind: IdKind, n: u8) -> Text {
    Text::Id(kind, n)
}

impl Step {
    /// A request to the route `method template` with its own method, no credentials,
    /// no body.
    pub fn to(method: &str, template: &str) -> Step {
        let route = match ROUTES
            .iter()
            .position(|(m, t, _)| m.eq_ignore_ascii_case(method) && *t == template)
        {
            Some(index) => u8::try_from(index).unwrap_or(u8::MAX),
            None => panic!("no route {method} {template}"),
        };
        Step {
            method: 0,
            target: Target::Route {
                route,
                segments: Vec::new(),
                query: Vec::new(),
            },
            auth: Auth::None,
            signature: Signature::None,
            idempotency_key: None,
            request_id: None,
            content_type: None,
            extra_header: None,
            peer: 0,
            body: BodyPlan::Empty,
        }
    }

    /// A request to `/` and `path` as it is.
    pub fn raw(path: &str) -> Step {
        Step {
            target: Target::Raw(path.trim_start_matches('/').as_bytes().to_vec()),
            ..Step::to("get", "/healthz")
        }
    }

    /// The `{…}` segments.
    pub fn at(mut self, texts: Vec<Text>) -> Step {
        if let Target::Route { segments, .. } = &mut self.target {
            *segments = texts;
        }
        self
    }

    /// The query.
    pub fn query(mut self, pairs: Vec<(Text, Text)>) -> Step {
        if let Target::Route { query, .. } = &mut self.target {
            *query = pairs;
        }
        self
    }

    /// As the fixture's key `held`.
    pub fn by(mut self, held: u8) -> Step {
        self.auth = Auth::Held(held);
        self
    }

    /// With this `Authorization`.
    pub fn auth(mut self, auth: Auth) -> Step {
        self.auth = auth;
        self
    }

    /// With a JSON body (and `Content-Type: application/json`).
    pub fn json(mut self, json: Json) -> Step {
        self.body = BodyPlan::Json(json);
        self.content_type = Some(w("application/json"));
        self
    }

    /// With this body.
    pub fn body(mut self, body: BodyPlan) -> Step {
        self.body = body;
        self
    }

    /// With an `Idempotency-Key`.
    pub fn idempotency(mut self, key: &str) -> Step {
        self.idempotency_key = Some(w(key));
        self
    }

    /// With signature headers.
    pub fn signed(mut self, signature: Signature) -> Step {
        self.signature = signature;
        self
    }

    /// From `PEERS[peer]`.
    pub fn from_peer(mut self, peer: u8) -> Step {
        self.peer = peer;
        self
    }

    /// With one more header.
    pub fn header(mut self, name: &str, value: Text) -> Step {
        self.extra_header = Some((w(name), value));
        self
    }

    /// With `X-Request-Id`.
    pub fn request_id(mut self, id: Text) -> Step {
        self.request_id = Some(id);
        self
    }
}

fn seed(name: &'static str, steps: Vec<(Step, &'static [u16])>) -> Seed {
    let (steps, expect) = steps.into_iter().unzip();
    Seed {
        name,
        plan: Plan { steps },
        expect,
    }
}

fn payout_request(account: u8, amount: &str, currency: &str) -> Step {
    Step::to("post", "/v1/payouts")
        .by(held::ANN)
        .json(object(vec![
            ("account", Json::Str(id(IdKind::Account, account))),
            ("payee", Json::Str(id(IdKind::Payee, 0))),
            ("amount", sw(amount)),
            ("currency", sw(currency)),
            ("reference", sw("x")),
            ("metadata", object(vec![("reference", sw("a"))])),
        ]))
}

fn payout_action(action: &str, who: u8, body: Json) -> Step {
    Step::to("post", &format!("/v1/payouts/{{id}}/{action}"))
        .at(vec![id(IdKind::Payout, 0)])
        .by(who)
        .json(body)
}

const OK: &[u16] = &[200];
const CREATED: &[u16] = &[201];
/// A fresh TOTP step may be used up (403 `two_factor_invalid`).
const OK_OR_CODE: &[u16] = &[200, 403];
const CREATED_OR_CODE: &[u16] = &[201, 403];

/// Every seed.
pub fn seeds() -> Vec<Seed> {
    let eur = 1; // the fixture's EUR account, behind its JPY one
    vec![
        seed(
            "public",
            vec![
                (Step::to("get", "/healthz"), OK),
                (Step::to("get", "/readyz"), OK),
                (Step::to("get", "/metrics"), OK),
                (Step::to("get", "/openapi.json").request_id(w("req-1")), OK),
            ],
        ),
        seed(
            "unauthenticated",
            vec![
                (Step::to("get", "/v1/payouts"), &[401]),
                (
                    Step::to("get", "/v1/payouts").auth(Auth::Bearer(w("inv_x.y"))),
                    &[401],
                ),
                (
                    Step::to("get", "/v1/payouts").auth(Auth::WrongSecret(held::ADMIN, w("x"))),
                    &[401],
                ),
                (
                    Step::to("get", "/v1/payouts").auth(Auth::Raw(w("Basic dXNlcjpwdw=="))),
                    &[401],
                ),
            ],
        ),
        seed(
            "reads",
            vec![
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::ANN)
                        .query(vec![(w("status"), w("requested")), (w("limit"), w("2"))]),
                    OK,
                ),
                (
                    Step::to("get", "/v1/payouts/{id}")
                        .at(vec![id(IdKind::Payout, 0)])
                        .by(held::ANN),
                    OK,
                ),
                (
                    Step::to("get", "/v1/accounts/{id}")
                        .at(vec![id(IdKind::Account, eur)])
                        .query(vec![(w("min_seq"), w("1"))])
                        .by(held::EVE),
                    OK,
                ),
                (
                    Step::to("get", "/v1/payees/{id}")
                        .at(vec![id(IdKind::Payee, 0)])
                        .by(held::ANN),
                    OK,
                ),
            ],
        ),
        seed(
            "payout_gates",
            vec![
                (payout_request(eur, "10.00", "EUR"), CREATED),
                (payout_action("approve", held::BOB, object(vec![])), OK),
                (
                    payout_action(
                        "authorize",
                        held::CAT,
                        object(vec![("otp", Json::Str(Text::Code(0)))]),
                    ),
                    OK_OR_CODE,
                ),
                (
                    payout_action("cancel", held::ANN, object(vec![("reason", sw("x"))])),
                    OK,
                ),
            ],
        ),
        seed(
            "payout_reject",
            vec![
                (payout_request(0, "1000", "JPY"), CREATED),
                (
                    payout_action("reject", held::BOB, object(vec![("reason", sw("x"))])),
                    OK,
                ),
                (payout_action("approve", held::BEA, object(vec![])), &[409]),
                (payout_request(eur, "125.505", "EUR"), &[422]),
            ],
        ),
        seed(
            "payout_batch",
            vec![
                (payout_request(eur, "1.00", "EUR"), CREATED),
                (payout_request(eur, "2.00", "EUR"), CREATED),
                (
                    Step::to("post", "/v1/payouts/{id}")
                        .at(vec![w("approve")])
                        .by(held::BEA)
                        .json(object(vec![(
                            "payouts",
                            Json::Array(vec![
                                Json::Str(id(IdKind::Payout, 0)),
                                Json::Str(id(IdKind::Payout, 1)),
                            ]),
                        )])),
                    OK,
                ),
                (
                    Step::to("post", "/v1/payouts/{id}")
                        .at(vec![w("authorize")])
                        .by(held::CAT)
                        .json(object(vec![
                            (
                                "payouts",
                                Json::Array(vec![
                                    Json::Str(id(IdKind::Payout, 0)),
                                    Json::Str(id(IdKind::Payout, 1)),
                                ]),
                            ),
                            ("otp", Json::Str(Text::Code(0))),
                        ])),
                    OK_OR_CODE,
                ),
            ],
        ),
        seed(
            "redeem",
            vec![
                (
                    Step::to("post", "/v1/users")
                        .by(held::ADMIN)
                        .json(object(vec![("name", sw("Zed"))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/invites/redeem")
                        .idempotency("k1")
                        .json(object(vec![("invite", Json::Str(id(IdKind::Invite, 0)))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/invites/redeem")
                        .idempotency("k1")
                        .json(object(vec![("invite", Json::Str(id(IdKind::Invite, 0)))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/invites/redeem")
                        .json(object(vec![("invite", Json::Str(id(IdKind::Invite, 1)))])),
                    &[401],
                ),
            ],
        ),
        seed(
            "new_person",
            vec![
                (
                    Step::to("post", "/v1/users")
                        .by(held::ADMIN)
                        .json(object(vec![("name", sw("Zed"))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/invites/redeem")
                        .json(object(vec![("invite", Json::Str(id(IdKind::Invite, 0)))])),
                    CREATED,
                ),
                (
                    Step::to("get", "/v1/payouts").auth(Auth::Obtained(0)),
                    &[403],
                ),
                (
                    Step::to("post", "/v1/me/totp/confirm")
                        .auth(Auth::Obtained(0))
                        .json(object(vec![("code", sw("000000"))])),
                    &[403],
                ),
            ],
        ),
        seed(
            "roles",
            vec![
                (
                    Step::to("post", "/v1/users")
                        .by(held::ADMIN)
                        .json(object(vec![("name", sw("Zed"))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/users/{id}/roles")
                        .at(vec![id(IdKind::User, 0)])
                        .by(held::ADMIN)
                        .json(object(vec![("role", sw("auditor"))])),
                    OK,
                ),
                (
                    Step::to("delete", "/v1/users/{id}/roles/{role}")
                        .at(vec![id(IdKind::User, 0), w("auditor")])
                        .by(held::ADMIN),
                    OK,
                ),
                (
                    Step::to("post", "/v1/roles")
                        .by(held::ADMIN)
                        .json(object(vec![
                            (
                                "grants",
                                Json::Array(vec![object(vec![
                                    ("user", Json::Str(id(IdKind::User, 0))),
                                    ("role", sw("requester")),
                                ])]),
                            ),
                            ("otp", Json::Str(Text::Code(0))),
                        ])),
                    OK_OR_CODE,
                ),
            ],
        ),
        seed(
            "api_keys",
            vec![
                (
                    Step::to("post", "/v1/me/api-keys")
                        .by(held::ANN)
                        .json(object(vec![
                            ("scopes", Json::Array(vec![sw("payout.request")])),
                            ("expires_at", sw("9999-12-31T23:59:59.999999Z")),
                            ("allowed_ips", Json::Array(vec![sw("127.0.0.1"), sw("::1")])),
                            ("otp", Json::Str(Text::Code(0))),
                        ])),
                    CREATED_OR_CODE,
                ),
                // With the new key, when there is one: its scope lacks ledger.read.
                (
                    Step::to("get", "/v1/payouts").auth(Auth::Obtained(0)),
                    &[401, 403],
                ),
                (
                    Step::to("delete", "/v1/me/api-keys/{id}")
                        .at(vec![id(IdKind::Key, 0)])
                        .by(held::ANN),
                    &[200, 404],
                ),
                (
                    Step::to("get", "/v1/payouts").auth(Auth::Obtained(0)),
                    &[401],
                ),
            ],
        ),
        seed(
            "accounts",
            vec![
                (
                    Step::to("post", "/v1/accounts")
                        .by(held::EVE)
                        .idempotency("k2")
                        .json(object(vec![("currency", sw("KWD")), ("name", sw("Zed"))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/accounts")
                        .by(held::EVE)
                        .idempotency("k2")
                        .json(object(vec![("currency", sw("KWD")), ("name", sw("Zed"))])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/accounts")
                        .by(held::EVE)
                        .idempotency("k2")
                        .json(object(vec![("currency", sw("JPY")), ("name", sw("Zed"))])),
                    &[422],
                ),
                (
                    Step::to("post", "/v1/accounts/{id}/deposits")
                        .at(vec![id(IdKind::Account, 0)])
                        .by(held::EVE)
                        .json(object(vec![("amount", sw("0.01")), ("reference", sw("x"))])),
                    CREATED,
                ),
            ],
        ),
        seed(
            "payees",
            vec![
                (
                    Step::to("post", "/v1/payees")
                        .by(held::ADMIN)
                        .json(object(vec![
                            ("name", sw("Zed")),
                            ("iban", sw("GB82 WEST 1234 5698 7654 32")),
                        ])),
                    CREATED,
                ),
                (
                    Step::to("post", "/v1/payees")
                        .by(held::ADMIN)
                        .json(object(vec![
                            ("name", sw("Zed")),
                            ("iban", sw("DE89370400440532013001")),
                        ])),
                    &[422],
                ),
                (
                    Step::to("get", "/v1/payees/{id}")
                        .at(vec![id(IdKind::Payee, 0)])
                        .by(held::ANN),
                    OK,
                ),
                (
                    Step::to("get", "/v1/payees/{id}")
                        .at(vec![id(IdKind::Payee, 0)])
                        .by(held::GLOBEX),
                    &[404],
                ),
            ],
        ),
        seed(
            "hmac",
            vec![
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::HMAC)
                        .signed(Signature::Valid),
                    OK,
                ),
                (
                    Step::to("post", "/v1/accounts")
                        .by(held::HMAC)
                        .json(object(vec![("currency", sw("EUR")), ("name", sw("Zed"))]))
                        .signed(Signature::Valid),
                    CREATED,
                ),
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::HMAC)
                        .signed(Signature::Skewed(skew(301))),
                    &[401],
                ),
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::HMAC)
                        .signed(Signature::Valid)
                        .from_peer(1),
                    &[401],
                ),
            ],
        ),
        seed(
            "hmac_refused",
            vec![
                (
                    Step::to("post", "/v1/accounts")
                        .by(held::HMAC)
                        .json(object(vec![("currency", sw("EUR")), ("name", sw("Zed"))]))
                        .signed(Signature::OtherBody),
                    &[401],
                ),
                (Step::to("get", "/v1/payouts").by(held::HMAC), &[401]),
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::HMAC)
                        .signed(Signature::Raw(w("0"), w("x"), w("v1=00"))),
                    &[401],
                ),
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::HMAC)
                        .signed(Signature::Valid)
                        .from_peer(3),
                    OK,
                ),
            ],
        ),
        seed(
            "webhooks",
            vec![
                (
                    Step::to("post", "/v1/webhooks")
                        .by(held::ADMIN)
                        .json(object(vec![
                            ("url", sw("https://hooks.example.com/in")),
                            (
                                "events",
                                Json::Array(vec![sw("payout.requested"), sw("user.added")]),
                            ),
                            ("description", sw("x")),
                        ])),
                    CREATED,
                ),
                (
                    Step::to("get", "/v1/webhooks/{id}")
                        .at(vec![id(IdKind::Webhook, 0)])
                        .by(held::ADMIN),
                    OK,
                ),
                (
                    Step::to("post", "/v1/webhooks/{id}/redeliver")
                        .at(vec![id(IdKind::Webhook, 0)])
                        .by(held::ADMIN)
                        .json(object(vec![])),
                    &[409],
                ),
                (
                    Step::to("delete", "/v1/webhooks/{id}")
                        .at(vec![id(IdKind::Webhook, 0)])
                        .by(held::ADMIN),
                    OK,
                ),
            ],
        ),
        seed(
            "webhook_targets",
            vec![
                (
                    Step::to("post", "/v1/webhooks")
                        .by(held::ADMIN)
                        .json(object(vec![
                            ("url", sw("http://169.254.169.254/latest")),
                            ("events", Json::Array(vec![sw("*")])),
                        ])),
                    &[422],
                ),
                (
                    Step::to("post", "/v1/webhooks")
                        .by(held::ADMIN)
                        .json(object(vec![
                            ("url", sw("http://[::ffff:7f00:1]/")),
                            ("events", Json::Array(vec![sw("*")])),
                        ])),
                    &[422],
                ),
                (Step::to("get", "/v1/webhooks").by(held::ADMIN), OK),
                (
                    Step::to("delete", "/v1/webhooks/{id}")
                        .at(vec![id(IdKind::Webhook, 0)])
                        .by(held::GLOBEX),
                    &[404],
                ),
            ],
        ),
        seed(
            "audit",
            vec![
                (
                    Step::to("get", "/v1/audit")
                        .by(held::AUD)
                        .query(vec![(w("limit"), w("2")), (w("result"), w("denied"))]),
                    OK,
                ),
                (Step::to("get", "/v1/audit/export").by(held::AUD), OK),
                (
                    Step::to("get", "/v1/events")
                        .by(held::AUD)
                        .query(vec![(w("after"), w("0")), (w("limit"), w("2"))]),
                    OK,
                ),
                (
                    Step::to("get", "/v1/events/stream")
                        .by(held::AUD)
                        .header("last-event-id", w("1")),
                    OK,
                ),
            ],
        ),
        seed(
            "checkpoints",
            vec![
                (Step::to("post", "/v1/checkpoints").by(held::AUD), CREATED),
                (Step::to("get", "/v1/checkpoints/latest").by(held::AUD), OK),
                (Step::to("get", "/v1/ledger/keys").by(held::AUD), OK),
                (Step::to("post", "/v1/checkpoints").by(held::SCOPED), &[403]),
            ],
        ),
        seed(
            "malformed",
            vec![
                (
                    Step::to("post", "/v1/payouts")
                        .by(held::ANN)
                        .body(BodyPlan::Raw(b"{".to_vec())),
                    &[400],
                ),
                (
                    Step::to("post", "/v1/accounts")
                        .by(held::EVE)
                        .json(object(vec![
                            ("currency", sw("EUR")),
                            ("name", sw("Zed")),
                            ("extra", Json::Null),
                        ])),
                    &[422],
                ),
                (
                    Step::to("post", "/v1/payouts")
                        .by(held::ANN)
                        .body(BodyPlan::Large(b' ', 1)),
                    &[413],
                ),
                (
                    Step {
                        method: 2, // POST
                        ..Step::to("get", "/healthz")
                    },
                    &[400],
                ),
            ],
        ),
        seed(
            "other_tenant",
            vec![
                (
                    Step::to("get", "/v1/payouts/{id}")
                        .at(vec![id(IdKind::Payout, 0)])
                        .by(held::GLOBEX),
                    &[403, 404],
                ),
                (
                    Step::to("get", "/v1/accounts/{id}")
                        .at(vec![id(IdKind::Account, eur)])
                        .by(held::GLOBEX),
                    &[403, 404],
                ),
                (Step::raw("/v1/nope"), &[401]),
                (Step::raw("/v1/payouts/po_none").by(held::ANN), &[404]),
            ],
        ),
        seed(
            "scoped_key",
            vec![
                (Step::to("get", "/v1/payouts").by(held::SCOPED), OK),
                (Step::to("get", "/v1/audit").by(held::SCOPED), &[403]),
                (
                    payout_request(eur, "1.00", "EUR").by(held::SCOPED),
                    &[403, 404],
                ),
            ],
        ),
        seed(
            "policy",
            vec![(
                Step::to("put", "/v1/policy/approvals")
                    .by(held::ADMIN)
                    .json(object(vec![
                        (
                            "rules",
                            Json::Array(vec![object(vec![
                                ("currency", sw("EUR")),
                                ("min_amount", sw("5000.00")),
                                ("approvals", Json::Number(2)),
                            ])]),
                        ),
                        ("otp", Json::Str(Text::Code(0))),
                    ])),
                OK_OR_CODE,
            )],
        ),
        seed(
            "totp",
            vec![
                (
                    Step::to("post", "/v1/me/totp/confirm")
                        .by(held::BOB)
                        .json(object(vec![("code", sw("000000"))])),
                    &[403],
                ),
                (
                    Step::to("post", "/v1/me/totp/confirm")
                        .by(held::BOB)
                        .json(object(vec![("code", Json::Str(Text::Code(0)))])),
                    OK_OR_CODE,
                ),
            ],
        ),
        seed(
            "queries",
            vec![
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::ANN)
                        .query(vec![(w("x"), w("1"))]),
                    &[422],
                ),
                (
                    Step::to("get", "/v1/audit").by(held::AUD).query(vec![
                        (w("from"), w("2026-11-22T09:00:00.000000Z")),
                        (w("to"), w("9999-12-31T23:59:59.999999Z")),
                        (w("actor"), id(IdKind::User, 1)),
                    ]),
                    OK,
                ),
                // A min_seq beyond the chain: 503 projection_behind, the one 5xx allowed.
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::ANN)
                        .query(vec![(w("min_seq"), w("18446744073709551615"))]),
                    &[503],
                ),
                (
                    Step::to("get", "/v1/payouts")
                        .by(held::ANN)
                        .query(vec![(w("limit"), w("4294967296"))]),
                    &[422],
                ),
            ],
        ),
    ]
}

fn skew(seconds: i64) -> u8 {
    match SKEWS.iter().position(|s| *s == seconds) {
        Some(index) => u8::try_from(index).unwrap_or(0),
        None => panic!("{seconds} is not in SKEWS"),
    }
}
