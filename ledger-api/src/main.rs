//! `ledger-api`: the operator CLI and the HTTP service. `anyhow` lives only here.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ledger_api::config::{listen_address, Storage};
use ledger_api::limits::LimitConfig;
use ledger_api::state::AppState;
use ledger_api::writer::Submission;
use ledger_api::{keys, routes, util};
use ledger_core::command::Command;
use ledger_core::crypto::KeyPurpose;
use ledger_core::ids::{PrincipalId, TenantId};

// The server's tasks allocate and free on both workers (requests, JSON, rows);
// mimalloc's per-thread heaps are cheaper there than glibc malloc (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ledger-api",
    version,
    about = "The payout ledger service and its operator CLI"
)]
struct Cli {
    #[command(flatten)]
    storage: Storage,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the HTTP API (the default).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations.
    Migrate,
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The read models (balances, payouts view, audit view).
    #[command(subcommand)]
    Projections(ProjectionsCmd),
}

#[derive(Debug, Subcommand)]
enum ProjectionsCmd {
    /// Rebuild from seq 1, each tenant in one transaction (readers see the old rows or
    /// the new); prints {"tenant","seq"} per tenant.
    Rebuild {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Requests per second per API key.
    #[arg(long, env = "LEDGER_RATE_PER_KEY", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_per_key: u32,
    /// Requests per second per client IP.
    #[arg(long, env = "LEDGER_RATE_PER_IP", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_per_ip: u32,
    /// Publish every committed event to NATS JetStream (`nats://host:port`, or
    /// `tls://host:port` for TLS only).
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// PEM CA certificates the NATS server's certificate must chain to (default: the
    /// system's roots).
    #[arg(long, env = "NATS_CA_FILE", requires = "nats_url")]
    nats_ca_file: Option<std::path::PathBuf>,
    /// Replicas of the JetStream stream when the relay creates it (1 to 5; 3 on a
    /// three-node NATS cluster, so that the stream survives the loss of a node).
    #[arg(long, env = "LEDGER_NATS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    nats_replicas: u8,
    /// Requests per minute per client IP on invite redemption and TOTP confirmation, and
    /// per API key on a person's requests that carry a one-time code.
    #[arg(long, env = "LEDGER_RATE_SENSITIVE_PER_MINUTE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    rate_sensitive_per_minute: u32,
    #[command(flatten)]
    webhooks: ledger_api::webhooks::settings::WebhookArgs,
    /// How long a read waits for the read model to reflect the seq it needs before it
    /// answers 503 (at most 60 000).
    #[arg(long, env = "LEDGER_READ_WAIT_MS", default_value_t = 5000)]
    read_wait_ms: u64,
    /// Embedded store: WAL frames (pages) past which the background checkpoint starts
    /// the log over (1 to 9 999).
    #[arg(long, env = "LEDGER_WAL_RESET_FRAMES", default_value_t = ledger_store::sqlite::WAL_RESET_FRAMES)]
    wal_reset_frames: i64,
    #[command(flatten)]
    tls: ledger_api::tls::TlsArgs,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            rate_per_key: 2000,
            rate_per_ip: 5000,
            rate_sensitive_per_minute: 20,
            nats_url: None,
            nats_ca_file: None,
            nats_replicas: 1,
            webhooks: ledger_api::webhooks::settings::WebhookArgs::default(),
            read_wait_ms: 5000,
            wal_reset_frames: ledger_store::sqlite::WAL_RESET_FRAMES,
            tls: ledger_api::tls::TlsArgs::default(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum TenantCmd {
    /// Create a tenant and its first administrator; prints {"tenant","admin","invite"}.
    Create {
        /// The tenant's slug, `[a-z0-9][a-z0-9-]{0,62}`.
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// The administrator's display name.
        #[arg(long)]
        admin: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create the checkpoint and 2FA signing keys if absent.
    Generate,
    /// Add a new key of a purpose; the old one stays listed for verification.
    Rotate {
        /// `checkpoint` or `2fa`.
        #[arg(long)]
        purpose: String,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stdout)
        .init();
}

async fn serve(storage: &Storage, args: ServeArgs) -> anyhow::Result<()> {
    let address: SocketAddr = listen_address(&args.listen)?;
    let webhooks = args.webhooks.validate()?;
    let read_wait = ledger_api::config::read_wait(args.read_wait_ms)?;
    let wal_reset_frames = ledger_api::config::wal_reset_frames(args.wal_reset_frames)?;
    let tls = match args.tls.files() {
        Some(files) => Some(ledger_api::tls::ReloadingConfig::load(files)?),
        None => None,
    };
    let mut state = AppState::build(
        storage,
        LimitConfig {
            per_key: args.rate_per_key,
            per_ip: args.rate_per_ip,
            sensitive_per_minute: args.rate_sensitive_per_minute,
        },
    )
    .await?;
    state.webhooks = std::sync::Arc::new(webhooks);
    state.read_wait = read_wait;
    state.projector.start();
    let app = match tls {
        Some(_) => ledger_api::app(state.clone()).layer(
            tower_http::set_header::SetResponseHeaderLayer::overriding(
                axum::http::header::STRICT_TRANSPORT_SECURITY,
                axum::http::HeaderValue::from_static(ledger_api::tls::STRICT_TRANSPORT_SECURITY),
            ),
        ),
        None => ledger_api::app(state.clone()),
    };
    if let Some(url) = args.nats_url.clone() {
        if !url.starts_with("nats://") && !url.starts_with("tls://") && !url.contains(':') {
            anyhow::bail!("--nats-url / NATS_URL: expected nats://host:port or tls://host:port");
        }
        if let Some(ca) = &args.nats_ca_file {
            ledger_api::tls::read_certificates("--nats-ca-file / NATS_CA_FILE", ca)?;
        }
        let target = ledger_api::relay::NatsTarget {
            url,
            ca_file: args.nats_ca_file.clone(),
            replicas: usize::from(args.nats_replicas),
        };
        tokio::spawn(ledger_api::relay::run(state.store.clone(), target));
    }
    tokio::spawn(ledger_api::webhooks::delivery::run(state.clone()));
    if let ledger_store::Store::Sqlite(sqlite) = &state.store {
        tokio::spawn(ledger_api::wal::run(
            sqlite.clone(),
            wal_reset_frames,
            state.metrics.clone(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--listen / LEDGER_LISTEN: cannot bind {address}"))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), "listening");
    match tls {
        Some(config) => {
            config.clone().reload_on_hangup()?;
            ledger_api::tls::serve(listener, app, config, shutdown).await?;
        }
        None => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await?;
        }
    }
    state.store.close().await;
    Ok(())
}

async fn rebuild_projections(storage: &Storage, tenant: Option<&str>) -> anyhow::Result<()> {
    let store = storage.open().await?;
    let tenants: Vec<TenantId> = match tenant {
        Some(slug) => vec![slug
            .parse()
            .map_err(|e| anyhow::anyhow!("--tenant {slug:?}: {e}"))?],
        None => store.indexed_tenants().await.context("list tenants")?,
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for tenant in tenants {
        let seq = store
            .rebuild_projection(&tenant)
            .await
            .with_context(|| format!("rebuild the projections of {tenant}"))?;
        writeln!(out, "{}", serde_json::json!({"tenant": tenant, "seq": seq}))?;
    }
    store.close().await;
    Ok(())
}

async fn create_tenant(
    storage: &Storage,
    slug: &str,
    name: &str,
    admin: &str,
) -> anyhow::Result<()> {
    let tenant: TenantId = slug
        .parse()
        .map_err(|e| anyhow::anyhow!("tenant slug {slug:?}: {e}"))?;
    let state = AppState::build(storage, LimitConfig::default()).await?;
    let admin_id: PrincipalId = util::random_id("usr_", 16)
        .parse()
        .map_err(|e| anyhow::anyhow!("admin id: {e}"))?;
    let operator: PrincipalId = "svc_operator"
        .parse()
        .map_err(|e| anyhow::anyhow!("operator id: {e}"))?;
    let submission = Submission {
        actor: operator.clone(),
        scopes: None,
        commands: vec![Command::CreateTenant {
            name: name.to_owned(),
            admin: Some(admin_id.clone()),
        }],
        denied: None,
        id_seed: None,
        recheck: false,
        request_id: None,
        view: Box::new(|_, _| serde_json::Value::Null),
        peek: None,
    };
    state
        .writers
        .submit(&tenant, submission)
        .await
        .map_err(|e| anyhow::anyhow!("tenant create: {e}"))?;
    let _ = admin;
    let invite = routes::users::create_invite(&state, &tenant, &admin_id)
        .await
        .map_err(|e| anyhow::anyhow!("invite: {e}"))?;
    let out = serde_json::json!({"tenant": tenant, "admin": admin_id, "invite": invite});
    use std::io::Write;
    writeln!(std::io::stdout(), "{out}")?;
    state.store.close().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ledger-api: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The chain of causes, without a backtrace: an operator reads this.
            eprintln!("ledger-api: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or_else(|| Cmd::Serve(Box::default())) {
        Cmd::Serve(args) => serve(&cli.storage, *args).await,
        Cmd::Migrate => {
            let store = cli.storage.open().await?;
            store.migrate().await.context("migrate")?;
            store.close().await;
            Ok(())
        }
        Cmd::Tenant(TenantCmd::Create { slug, name, admin }) => {
            create_tenant(&cli.storage, &slug, &name, &admin).await
        }
        Cmd::Projections(ProjectionsCmd::Rebuild { tenant }) => {
            rebuild_projections(&cli.storage, tenant.as_deref()).await
        }
        Cmd::Keys(KeysCmd::Generate) => {
            keys::ensure_keys(&cli.storage.keys_dir(), util::now())?;
            Ok(())
        }
        Cmd::Keys(KeysCmd::Rotate { purpose }) => {
            let purpose = match purpose.as_str() {
                "checkpoint" => KeyPurpose::Checkpoint,
                "2fa" => KeyPurpose::TwoFactor,
                other => anyhow::bail!("--purpose: {other:?} is neither checkpoint nor 2fa"),
            };
            let key_id = keys::add_key(&cli.storage.keys_dir(), purpose, util::now())?;
            use std::io::Write;
            writeln!(std::io::stdout(), "{key_id}")?;
            Ok(())
        }
    }
}
