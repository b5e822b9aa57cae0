//! What every handler shares: the request's context (`Ctx`: the caller, its writer,
//! its idempotency key), permission checks, new object ids, and the answers' shapes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ledger_core::command::Command;
use ledger_core::ids::PrincipalKind;
use ledger_core::policy::{roles_allow, Permission};
use ledger_core::proof::{batch_subject, TwoFactorFailure, TwoFactorProof};
use ledger_core::state::TenantState;
use ledger_core::Rejection;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::context::{Caller, Idempotency};
use crate::state::AppState;
use crate::util;
use crate::writer::{Peek, Submission, View};

pub(crate) fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::Validation(format!("{what} is not valid")))
}

pub(crate) fn path_id<T: std::str::FromStr>(text: &str) -> Result<T, ApiError> {
    // An id that cannot exist is simply not found.
    text.parse().map_err(|_| ApiError::NotFound)
}

/// A new object id: derived from the idempotency key when there is one, so that a
/// retried request names the same object; random otherwise.
pub(crate) fn new_id(prefix: &str, idempotency: Option<&Idempotency>, salt: &str) -> String {
    match idempotency {
        None => util::random_id(prefix, 16),
        Some(idem) => {
            const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
            let digest = Sha256::new()
                .chain_update(idem.seed)
                .chain_update(prefix)
                .chain_update(salt)
                .finalize();
            let body: String = digest
                .iter()
                .take(16)
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            format!("{prefix}{body}")
        }
    }
}

/// Whether the caller's roles and key scopes allow `permission`.
pub(crate) async fn caller_may(
    state: &AppState,
    caller: &Caller,
    permission: Permission,
) -> Result<bool, ApiError> {
    let who = caller.clone();
    state
        .writers
        .read(&caller.tenant, move |tenant, _| {
            allowed(tenant, &who, permission)
        })
        .await
}

pub(crate) fn allowed(state: &TenantState, caller: &Caller, permission: Permission) -> bool {
    let by_roles = state
        .roles_of(&caller.principal)
        .is_some_and(|roles| roles_allow(roles, permission));
    let by_scopes = caller
        .scopes
        .as_ref()
        .is_none_or(|scopes| scopes.contains(&permission));
    by_roles && by_scopes
}

pub(crate) struct Ctx {
    pub(crate) state: AppState,
    pub(crate) caller: Caller,
    pub(crate) idempotency: Option<Idempotency>,
    /// Handed to the writer with the next submission (`Submission::peek`).
    peek: std::sync::Mutex<Option<Peek>>,
}

impl Ctx {
    pub(crate) fn new(
        state: AppState,
        caller: Caller,
        idempotency: Option<Extension<Idempotency>>,
    ) -> Self {
        Self {
            state,
            caller,
            idempotency: idempotency.map(|Extension(i)| i),
            peek: std::sync::Mutex::new(None),
        }
    }

    /// Lets the next submission look at the state right before it is decided.
    pub(crate) fn peeking(self, peek: Peek) -> Self {
        if let Ok(mut slot) = self.peek.lock() {
            *slot = Some(peek);
        }
        self
    }

    pub(crate) async fn submit(
        &self,
        commands: Vec<Command>,
        denied: Option<Rejection>,
        view: View,
    ) -> Result<Value, ApiError> {
        let submission = Submission {
            actor: self.caller.principal.clone(),
            scopes: self.caller.scopes.clone(),
            commands,
            denied,
            id_seed: self.idempotency.map(|i| i.seed),
            recheck: self.idempotency.is_some_and(|i| i.recheck),
            request_id: Some(self.caller.request_id.as_str().to_owned()),
            view,
            peek: self.peek.lock().ok().and_then(|mut slot| slot.take()),
        };
        let outcome = self
            .state
            .writers
            .submit(&self.caller.tenant, submission)
            .await;
        if let Ok((events, _)) = &outcome {
            if let Some(last) = events.last() {
                crate::http::context::note_committed(last.seq);
            }
        }
        match outcome {
            Ok((_, answer)) => Ok(answer),
            Err(ApiError::Rejected(Rejection::TwoFactor(TwoFactorFailure::Locked))) => {
                let retry_after = self
                    .state
                    .lockout_left(&self.caller.tenant, &self.caller.principal)
                    .await?
                    .max(1);
                Err(ApiError::Locked { retry_after })
            }
            Err(other) => Err(other),
        }
    }

    /// Runs commands that need a fresh 2FA code: checks `otp`, signs one proof for the
    /// commands' subjects (a batch proof for several), and submits; a wrong or locked
    /// code is recorded as a denied command. Services need no code.
    pub(crate) async fn submit_with_code(
        &self,
        commands: Vec<Command>,
        otp: Option<&str>,
        view: View,
    ) -> Result<Value, ApiError> {
        let Some(first) = commands.first() else {
            return Err(ApiError::Validation("no command".into()));
        };
        if self.caller.principal.kind() == PrincipalKind::Service || otp.is_none() {
            // A service needs no proof; a person without a code gets the core's
            // `two_factor_required`, recorded as evidence.
            return self.submit(commands, None, view).await;
        }
        let action = first.action();
        let step = match self
            .state
            .check_code(&self.caller.tenant, &self.caller.principal, otp, true)
            .await?
        {
            Ok(step) => step,
            Err(rejection) => return self.submit(commands, Some(rejection), view).await,
        };
        let subjects: Vec<String> = commands.iter().map(Command::subject).collect();
        let (subject, batch) = if commands.len() == 1 {
            (subjects[0].clone(), None)
        } else {
            (batch_subject(&subjects), Some(subjects))
        };
        let proof = self.state.proof(
            &self.caller.tenant,
            &self.caller.principal,
            action,
            &subject,
            step,
        );
        let commands = commands
            .into_iter()
            .map(|c| with_proof(c, proof.clone(), batch.clone()))
            .collect();
        self.submit(commands, None, view).await
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&TenantState) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.state
            .writers
            .read(&self.caller.tenant, move |state, _| read(state))
            .await
    }

    /// Reads under `permission`: without it, 403 like a denied command (reads are not
    /// appended).
    pub(crate) async fn read_as<T: Send + 'static>(
        &self,
        permission: Permission,
        read: impl FnOnce(&TenantState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let caller = self.caller.clone();
        self.read(move |state| {
            if !allowed(state, &caller, permission) {
                return Err(ApiError::Rejected(Rejection::Forbidden { permission }));
            }
            read(state)
        })
        .await?
    }
}

pub(crate) fn with_proof(
    command: Command,
    proof: TwoFactorProof,
    list: Option<Vec<String>>,
) -> Command {
    match command {
        Command::GrantRole { user, role, .. } => Command::GrantRole {
            user,
            role,
            two_factor: Some(proof),
            batch: list,
        },
        Command::IssueApiKey {
            key,
            scopes,
            expires_at,
            ..
        } => Command::IssueApiKey {
            key,
            scopes,
            expires_at,
            two_factor: Some(proof),
        },
        Command::UpdatePolicy { rules, .. } => Command::UpdatePolicy {
            rules,
            two_factor: Some(proof),
        },
        Command::AuthorizePayout { payout, .. } => Command::AuthorizePayout {
            payout,
            two_factor: Some(proof),
            batch: list,
        },
        Command::ExecutePayout { payout, rail, .. } => Command::ExecutePayout {
            payout,
            rail,
            two_factor: Some(proof),
            batch: list,
        },
        Command::ReleasePayout { payout, .. } => Command::ReleasePayout {
            payout,
            two_factor: Some(proof),
            batch: list,
        },
        Command::EnableAutopayRule { rule, .. } => Command::EnableAutopayRule {
            rule,
            two_factor: Some(proof),
        },
        other @ (Command::CreateTenant { .. }
        | Command::AddUser { .. }
        | Command::RevokeRole { .. }
        | Command::RevokeApiKey { .. }
        | Command::OpenAccount { .. }
        | Command::Deposit { .. }
        | Command::AddPayee { .. }
        | Command::RequestPayout { .. }
        | Command::ApprovePayout { .. }
        | Command::RejectPayout { .. }
        | Command::FailPayout { .. }
        | Command::CancelPayout { .. }
        | Command::ProposeAutopayRule { .. }
        | Command::DisableAutopayRule { .. }
        | Command::ApprovePayoutByRule { .. }
        | Command::DeactivateUser { .. }
        | Command::RecoverTotp {}
        | Command::SuspendTenant { .. }
        | Command::ResumeTenant { .. }) => other,
    }
}

pub(crate) fn created(value: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

/// An answer carrying a secret shown once: its idempotent replay copy is stored
/// encrypted ([`crate::http::context::SecretAnswer`]).
pub(crate) fn secret_answer(mut response: Response) -> Response {
    response
        .extensions_mut()
        .insert(crate::http::context::SecretAnswer);
    response
}

pub(crate) fn ok(value: impl serde::Serialize) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}
