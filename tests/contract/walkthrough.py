"""The README's walkthrough driven through a client generated from /openapi.json alone
(openapi-python-client), as someone who never read the server's code would: each step
finds its operation in the document, calls the generated function for it with the
generated body model, and reads the generated answer model. TOTP codes from pyotp.

Run by tests/contract/run (LEDGER_BASE, LEDGER_ADMIN_KEY, LEDGER_ADMIN_TOTP,
LEDGER_CLIENT_PACKAGE, the package on PYTHONPATH).
"""

import importlib
import inspect
import json
import os
import sys
import time
import urllib.request
import uuid

import pyotp
from openapi_python_client.strings import snake_case

BASE = os.environ["LEDGER_BASE"]
PACKAGE = os.environ["LEDGER_CLIENT_PACKAGE"]
client_module = importlib.import_module(PACKAGE)
with urllib.request.urlopen(BASE + "/openapi.json", timeout=30) as answer:
    DOCUMENT = json.load(answer)


def operation(method, path):
    """The generated module of the document's operation for `method path`."""
    spec = DOCUMENT["paths"][path][method.lower()]
    tag = snake_case((spec.get("tags") or ["default"])[0])
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{snake_case(spec['operationId'])}")


def call(method, path, key=None, body=None, expect=200, **path_parameters):
    """Calls the generated function; the answer's model, as a dict."""
    module = operation(method, path)
    if key:
        client = client_module.AuthenticatedClient(base_url=BASE, token=key)
    else:
        client = client_module.Client(base_url=BASE)
    parameters = inspect.signature(module.sync_detailed).parameters
    arguments = {"client": client, **path_parameters}
    if "body" in parameters:
        model = parameters["body"].annotation
        if isinstance(model, str):
            model = getattr(module, model)
        arguments["body"] = model.from_dict(body if body is not None else {})
    elif body is not None:
        sys.exit(f"{method} {path}: the document has no request body, the walkthrough sends one")
    if "idempotency_key" in parameters:
        arguments["idempotency_key"] = str(uuid.uuid4())
    response = module.sync_detailed(**arguments)
    status = int(response.status_code)
    if status != expect:
        sys.exit(f"{method} {path}: {status}, expected {expect}: {response.content[:500]!r}")
    parsed = response.parsed
    if parsed is None:
        sys.exit(f"{method} {path}: the generated client could not read the {status} answer")
    return parsed.to_dict()


def later_code(secret):
    """The next 30-second step's code (each step is used once per person)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


admin_key = os.environ["LEDGER_ADMIN_KEY"]
admin_totp = os.environ["LEDGER_ADMIN_TOTP"]

people = {}
for who in ["ann", "bob", "cat", "dan", "rex", "eve", "aud"]:
    invited = call("POST", "/v1/users", admin_key, {"name": who}, expect=201)
    redeemed = call("POST", "/v1/invites/redeem", None, {"invite": invited["invite"]}, expect=201)
    call("POST", "/v1/me/totp/confirm", redeemed["api_key"],
         {"code": pyotp.TOTP(redeemed["totp_secret"]).now()})
    people[who] = redeemed

roles = {"ann": "requester", "bob": "approver", "cat": "authorizer", "dan": "executor",
         "rex": "releaser", "eve": "treasurer", "aud": "auditor"}
call("POST", "/v1/roles", admin_key, {
    "otp": later_code(admin_totp),
    "grants": [{"user": people[who]["user"], "role": role} for who, role in roles.items()],
})

key = {who: person["api_key"] for who, person in people.items()}
totp = {who: person["totp_secret"] for who, person in people.items()}
account = call("POST", "/v1/accounts", key["eve"], {"currency": "EUR", "name": "Operations"},
               expect=201)["account"]
call("POST", "/v1/accounts/{id}/deposits", key["eve"],
     {"amount": "50000.00", "reference": "funding"}, expect=201, id=account)
payee = call("POST", "/v1/payees", admin_key,
             {"name": "Larkspur Ltd", "iban": "DE89370400440532013000"}, expect=201)["payee"]
shown = call("GET", "/v1/payees/{id}", admin_key, id=payee)
assert "DE89370400440532013000" not in json.dumps(shown), "the IBAN was shown unmasked"

payout = call("POST", "/v1/payouts", key["ann"], {
    "account": account, "payee": payee, "amount": "1250.50", "currency": "EUR",
    "reference": "INV-1042",
}, expect=201)
assert payout["status"] == "requested", payout
payout = payout["payout"]
call("POST", "/v1/payouts/{id}/approve", key["ann"], {}, expect=403, id=payout)
call("POST", "/v1/payouts/{id}/approve", key["bob"], {}, id=payout)
for who, gate in [("cat", "authorize"), ("dan", "execute"), ("rex", "release")]:
    answer = call("POST", f"/v1/payouts/{{id}}/{gate}", key[who],
                  {"otp": later_code(totp[who])}, id=payout)
    assert answer["status"] in ("authorized", "executed", "released"), answer

balance = call("GET", "/v1/accounts/{id}", key["eve"], id=account)
assert (balance["available"], balance["held"]) == ("48749.50", "0.00"), balance
final = call("GET", "/v1/payouts/{id}", key["aud"], id=payout)
assert final["status"] == "released", final
print("walkthrough: the payout went through every gate with the generated client")
