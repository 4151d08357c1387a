"""A fintech's integration through the generated Python SDK only (no hand-written HTTP).

Driven by tests/integration/sdks.rs against a running server, in two phases:

  scenario.py portal BASE STAFF1 STAFF2 PASSWORD WEBHOOK_URL
      developer sign-up and login, KYC draft and submit, two staff approvals (staff calls),
      a production client with a webhook, secret rotation. Prints JSON:
      {"developer_token", "client_id", "client_secret"}.

  scenario.py grants BASE DEVELOPER_TOKEN CLIENT_ID CLIENT_SECRET GRANT_ID
      (after a customer consented to the client) the client grant API, the revocation feed
      before and after the client revokes the grant, and the webhook deliveries. Prints JSON.

Every call checks what it got; a failure raises and the script exits non-zero.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import sys
import time
from typing import Any, TypeVar

from consent_client import AuthenticatedClient, Client
from consent_client.api.client_grants import client_grant, client_revoke_grant
from consent_client.api.clients import create_client, get_client, rotate_secret, webhook_deliveries
from consent_client.api.developers import (
    developer_login,
    developer_me,
    put_kyc,
    sign_up,
    submit_kyc,
)
from consent_client.api.oauth import revocation_feed
from consent_client.api.staff import kyc_queue, kyc_review, staff_confirm, staff_enrol, staff_login
from consent_client.models import (
    AuthMethod,
    ClientGrantView,
    ClientResponse,
    ClientSecretResponse,
    CreateClientRequest,
    DeveloperLoginRequest,
    DeveloperResponse,
    DocumentKind,
    EnrolledResponse,
    EnrolmentResponse,
    Environment,
    GrantStatus,
    KycDecision,
    KycDocumentBody,
    KycQueue,
    KycRequest,
    KycResponse,
    KycReviewRequest,
    StaffKycResponse,
    KycStatus,
    Problem,
    RevocationFeed,
    SecondFactorCode,
    SecondFactorDue,
    SessionToken,
    SignUpRequest,
    StaffEnrolmentRequest,
    StaffLoginRequest,
    WebhookDeliveryList,
)
from consent_client.types import Response

T = TypeVar("T")


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238 as an authenticator app computes it (HMAC-SHA-1, 6 digits, 30 s)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"

EMAIL = "sdk-python@fintech.example"
DEV_PASSWORD = "a long developer password"
REDIRECT = "https://app.fintech.example/callback"


def ok(what: str, value: T | Problem | None, kind: type[T]) -> T:
    """The parsed success body, or an error naming what failed."""
    if not isinstance(value, kind):
        raise SystemExit(f"{what}: expected {kind.__name__}, got {value!r}")
    return value


def status(what: str, response: Response[Any], expected: int) -> None:
    if response.status_code != expected:
        raise SystemExit(f"{what}: HTTP {response.status_code}: {response.content!r}")


def portal(
    base: str, staff1: str, staff2: str, staff_password: str, webhook_url: str, code1: str, code2: str
) -> dict[str, str]:
    public = Client(base_url=base, raise_on_unexpected_status=True)
    ok(
        "sign up",
        sign_up.sync(
            client=public,
            body=SignUpRequest(email=EMAIL, password=DEV_PASSWORD, display_name="SDK Fintech"),
        ),
        DeveloperResponse,
    )
    token = ok(
        "developer login",
        developer_login.sync(client=public, body=DeveloperLoginRequest(email=EMAIL, password=DEV_PASSWORD)),
        SessionToken,
    )
    dev = AuthenticatedClient(base_url=base, token=token.access_token, raise_on_unexpected_status=True)

    draft = ok(
        "KYC draft",
        put_kyc.sync(
            client=dev,
            body=KycRequest(
                legal_name="SDK Fintech Ltd",
                registration_number="HRB-998877",
                country="DE",
                address="2 Example Street, 10115 Berlin",
                contact_person="Sam Compliance",
                documents=[
                    KycDocumentBody(
                        kind=DocumentKind.CERTIFICATE_OF_INCORPORATION,
                        filename="incorporation.pdf",
                        sha256="b" * 64,
                    )
                ],
            ),
        ),
        KycResponse,
    )
    assert draft.status == KycStatus.DRAFT, draft.status
    submitted = ok("KYC submit", submit_kyc.sync(client=dev), KycResponse)
    assert submitted.status == KycStatus.SUBMITTED, submitted.status

    # Four eyes: two different staff members approve. Their first login owes enrolment of an
    # authenticator: the password's token and the operator's enrolment code set one up, and the
    # first code opens the session.
    for username, enrolment_code in ((staff1, code1), (staff2, code2)):
        login = ok(
            f"staff login {username}",
            staff_login.sync(client=public, body=StaffLoginRequest(username=username, password=staff_password)),
            SessionToken,
        )
        assert login.second_factor_due == SecondFactorDue.ENROL, login.second_factor_due
        owing = AuthenticatedClient(base_url=base, token=login.access_token, raise_on_unexpected_status=True)
        enrolment = ok(
            f"enrol {username}",
            staff_enrol.sync(client=owing, body=StaffEnrolmentRequest(enrolment_code=enrolment_code)),
            EnrolmentResponse,
        )
        assert enrolment.otpauth_uri.startswith("otpauth://totp/"), enrolment.otpauth_uri
        enrolled = ok(
            f"confirm {username}",
            staff_confirm.sync(client=owing, body=SecondFactorCode(code=totp(enrolment.secret))),
            EnrolledResponse,
        )
        assert len(enrolled.recovery_codes) == 10, enrolled.recovery_codes
        session = enrolled.session
        assert isinstance(session, SessionToken), session
        staff = AuthenticatedClient(base_url=base, token=session.access_token, raise_on_unexpected_status=True)
        queue = ok("KYC queue", kyc_queue.sync(client=staff), KycQueue)
        item = next(s for s in queue.submissions if s.developer_email == EMAIL)
        ok(
            f"KYC review by {username}",
            kyc_review.sync(
                client=staff,
                submission_id=item.id,
                body=KycReviewRequest(decision=KycDecision.APPROVE, justification="Documents checked against the register."),
            ),
            StaffKycResponse,
        )
    me = ok("developer me", developer_me.sync(client=dev), DeveloperResponse)
    assert me.kyc_status == "approved", me.kyc_status

    # Production (approved KYC): FAPI 2.0, so certificate-bound (RFC 8705) rather than a secret.
    production = ok(
        "production client",
        create_client.sync(
            client=dev,
            body=CreateClientRequest(
                name="SDK Budget",
                environment=Environment.PRODUCTION,
                redirect_uris=[REDIRECT],
                auth_method=AuthMethod.TLS_CLIENT_AUTH,
                tls_client_auth_subject_dn="CN=budget,O=SDK Fintech Ltd,C=DE",
                tls_client_certificate_bound_access_tokens=True,
            ),
        ),
        ClientSecretResponse,
    )
    assert production.environment == Environment.PRODUCTION
    assert not isinstance(production.client_secret, str), "no secret for a certificate-bound client"
    # The sandbox client the rest of the scenario uses: a secret (rotated), and a webhook.
    created = ok(
        "sandbox client",
        create_client.sync(
            client=dev,
            body=CreateClientRequest(
                name="SDK Budget (sandbox)",
                environment=Environment.SANDBOX,
                redirect_uris=[REDIRECT],
                webhook_url=webhook_url,
            ),
        ),
        ClientSecretResponse,
    )
    rotated = ok("secret rotation", rotate_secret.sync(client=dev, client_id=created.client_id), ClientSecretResponse)
    assert isinstance(rotated.client_secret, str) and rotated.client_secret != created.client_secret
    return {
        "developer_token": token.access_token,
        "client_id": created.client_id,
        "client_secret": rotated.client_secret,
        "redirect_uri": REDIRECT,
    }


def grants(base: str, developer_token: str, client_id: str, client_secret: str, grant_id: str) -> dict[str, Any]:
    pair = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    fintech = AuthenticatedClient(base_url=base, token=pair, prefix="Basic", raise_on_unexpected_status=True)
    grant = ok("client grant", client_grant.sync(client=fintech, id=grant_id), ClientGrantView)
    assert grant.status == GrantStatus.AUTHORIZED, grant.status

    before = ok("revocation feed", revocation_feed.sync(client=fintech), RevocationFeed)
    status("client revokes", client_revoke_grant.sync_detailed(client=fintech, id=grant_id), 204)
    after = ok("revocation feed since", revocation_feed.sync(client=fintech, since=before.next_cursor), RevocationFeed)
    assert any(e.grant_id == grant_id for e in after.revocations), after
    ended = ok("client grant after", client_grant.sync(client=fintech, id=grant_id), ClientGrantView)
    assert ended.status == GrantStatus.REVOKED, ended.status

    dev = AuthenticatedClient(base_url=base, token=developer_token, raise_on_unexpected_status=True)
    listed = ok("webhook deliveries", webhook_deliveries.sync(client=dev, client_id=client_id), WebhookDeliveryList)
    revoked = [d for d in listed.deliveries if d.event_type == "grant.revoked" and d.grant_id == grant_id]
    assert revoked, listed
    client = ok("client", get_client.sync(client=dev, client_id=client_id), ClientResponse)
    return {
        "revoked_in_feed": True,
        "webhook_events": [d.event_type for d in listed.deliveries],
        "client_status": str(client.status),
    }


def main(argv: list[str]) -> None:
    phase, args = argv[1], argv[2:]
    if phase == "portal":
        out: dict[str, Any] = portal(*args)
    elif phase == "grants":
        out = grants(*args)
    else:
        raise SystemExit(f"unknown phase {phase}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
