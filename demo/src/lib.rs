//! `botline-demo`: everything in one process so a newcomer sees tasks flow within seconds: the
//! orchestrator (API, dispatcher, event consumer), the Vivo360 portal, the equipment config
//! service (HTTPS, self-signed) and the notification sink, three bot agents, and a few sample
//! tasks.
//!
//! A crate of its own so the orchestrator's binary links neither the bot agent nor the
//! simulators (nor their certificate generator): it depends on all three.

use std::net::SocketAddr;

use base64::Engine as _;
use bot_agent::AgentConfig;
use broker_config::{BotName, CpePayload, CpeRequest, EquipmentId, System};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use orchestrator::clock::now;
use orchestrator::store::tasks::create_task;
use orchestrator::tasks::{TaskRequest, TaskSpec};
use orchestrator::{Config, Orchestrator, StartError};

/// How long the demo's equipment takes to configure: long enough to see an activation RUNNING,
/// far shorter than a real device's minute.
const EQUIPMENT_DELAY_MS: u64 = 3000;
/// Where the stand-ins listen, on loopback: `botline-demo --portal-port …`. A port that is taken
/// (or 0) gives way to any free one; the banner prints the one used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct StandInPorts {
    /// The Vivo360 portal stand-in's port.
    #[arg(long, env = "BOTLINE_DEMO_PORTAL_PORT", default_value_t = 8091)]
    pub portal_port: u16,
    /// The equipment config service stand-in's port (HTTPS, self-signed).
    #[arg(long, env = "BOTLINE_DEMO_EQUIPMENT_PORT", default_value_t = 8092)]
    pub equipment_port: u16,
    /// The notification sink stand-in's port.
    #[arg(long, env = "BOTLINE_DEMO_SINK_PORT", default_value_t = 8093)]
    pub sink_port: u16,
}

impl Default for StandInPorts {
    fn default() -> StandInPorts {
        StandInPorts { portal_port: 8091, equipment_port: 8092, sink_port: 8093 }
    }
}

/// The first sample's description: when a task has it, the samples are there already (a demo
/// run before on the same database) and are not added again.
const FIRST_SAMPLE: &str = "Create the March hires in Vivo360";

/// The three demo bots: two run everything this build can run, one only NOOP.
const BOTS: [(&str, &[System]); 3] = [
    ("bot-1", &[System::VIVO360, System::CPE, System::NOTIFY, System::NOOP]),
    ("bot-2", &[System::VIVO360, System::CPE, System::NOTIFY, System::NOOP]),
    ("bot-3", &[System::NOOP]),
];

/// The example users file shipped in the repository.
const EXAMPLE_USERS: &str = include_str!("../../examples/vivo360-users.csv");

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The orchestrator itself could not start (database, broker).
    #[error(transparent)]
    Start(#[from] StartError),
    /// A port could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The equipment service's self-signed certificate could not be made.
    #[error("cannot set up the equipment service's HTTPS: {0}")]
    Tls(#[from] simulators::tls::SelfSignedError),
    /// A sample task was refused (a bug in the samples).
    #[error("cannot create the sample tasks: {0}")]
    Samples(String),
}

/// Where the demo's parts listen.
#[derive(Debug, Clone)]
pub struct DemoAddresses {
    /// The API (and, later, the dashboard).
    pub api: SocketAddr,
    /// The Vivo360 portal stand-in.
    pub portal: SocketAddr,
    /// The equipment config service (HTTPS, self-signed).
    pub equipment: SocketAddr,
    /// The notification sink.
    pub sink: SocketAddr,
    /// Whether this run submitted the sample tasks (`false`: an earlier run on this database did).
    pub seeded: bool,
}

/// Binds `port` on loopback, or any free port when it is taken.
async fn bind_loopback(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => Ok(listener),
        Err(_) => TcpListener::bind(("127.0.0.1", 0)).await,
    }
}

/// Starts everything, seeds the sample tasks and calls `ready` with the addresses; runs until
/// `shutdown`, then stops the bots first (they finish or hand back their tasks), then the rest.
pub async fn run_demo(
    config: Config,
    ports: StandInPorts,
    shutdown: CancellationToken,
    ready: impl FnOnce(&DemoAddresses),
) -> Result<(), DemoError> {
    // The orchestrator and the simulators stop together, after the bots.
    let services = CancellationToken::new();
    let orchestrator = Orchestrator::start(&config, services.clone()).await?;
    let listen = |address: SocketAddr| move |source| DemoError::Listen { address, source };
    let api = TcpListener::bind(config.listen).await.map_err(listen(config.listen))?;
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let StandInPorts { portal_port, equipment_port, sink_port } = ports;
    let portal = bind_loopback(portal_port).await.map_err(listen(loopback(portal_port)))?;
    let equipment =
        bind_loopback(equipment_port).await.map_err(listen(loopback(equipment_port)))?;
    let sink = bind_loopback(sink_port).await.map_err(listen(loopback(sink_port)))?;
    let address = |l: &TcpListener, port| l.local_addr().map_err(listen(loopback(port)));
    let mut addresses = DemoAddresses {
        api: address(&api, config.listen.port())?,
        portal: address(&portal, portal_port)?,
        equipment: address(&equipment, equipment_port)?,
        sink: address(&sink, sink_port)?,
        seeded: false,
    };

    // Slow enough that tasks are seen RUNNING, row by row.
    let portal_config = simulators::vivo360::Vivo360Config { delay_ms: 120, ..Default::default() };
    let portal = tokio::spawn(simulators::vivo360::serve(portal, portal_config, services.clone()));
    let equipment_config = simulators::equipment::EquipmentConfig {
        delay_ms: EQUIPMENT_DELAY_MS,
        ..Default::default()
    };
    let equipment = tokio::spawn(simulators::equipment::serve_tls(
        equipment,
        equipment_config,
        simulators::tls::self_signed()?,
        services.clone(),
    ));
    let sink = tokio::spawn(simulators::notify::serve(sink, Default::default(), services.clone()));
    addresses.seeded = seed_samples(&orchestrator).await?;
    // The classic incident action (login 503/404), unless one with its code exists.
    orchestrator::incidents::sample::ensure_sample_action(orchestrator.db(), now())
        .await
        .map_err(|e| DemoError::Samples(e.to_string()))?;
    let server = tokio::spawn(orchestrator.serve(api));

    let bots_stop = CancellationToken::new();
    let mut bots = Vec::new();
    for (name, systems) in BOTS {
        let Ok(name) = BotName::parse(name) else { continue };
        let mut agent = AgentConfig::new(name.clone(), systems.to_vec(), config.broker_url());
        agent.vivo360_url = format!("http://{}", addresses.portal);
        agent.equipment_url = format!("https://{}", addresses.equipment);
        // The demo's equipment service has a certificate it made itself at start.
        agent.equipment_insecure = true;
        agent.notify_url = format!("http://{}", addresses.sink);
        agent.ip_address = Some("127.0.0.1".into());
        agent.heartbeat_interval_ms = u64::try_from(config.heartbeat_interval.as_millis())
            .unwrap_or(bot_agent::config::DEFAULT_HEARTBEAT_INTERVAL_MS);
        let stop = bots_stop.clone();
        bots.push(tokio::spawn(async move {
            if let Err(err) = bot_agent::run(agent, stop).await {
                tracing::error!(bot = %name, error = %err, "demo bot stopped");
            }
        }));
    }
    ready(&addresses);

    shutdown.cancelled().await;
    bots_stop.cancel();
    for bot in bots {
        let _ = bot.await;
    }
    services.cancel();
    let _ = server.await;
    let _ = portal.await;
    let _ = equipment.await;
    let _ = sink.await;
    Ok(())
}

/// A few tasks that show the pipeline's range: users created row by row, rows the portal
/// refuses, and quick NOOP tasks spread over the bots. Once per database: `false` when an earlier
/// run submitted them.
async fn seed_samples(orchestrator: &Orchestrator) -> Result<bool, DemoError> {
    let filter = orchestrator::store::tasks::TaskFilter {
        search: orchestrator::store::tasks::Search::parse(FIRST_SAMPLE),
        ..Default::default()
    };
    let page = orchestrator::pagination::PageRequest::parse(Some(1), None, None, None)
        .map_err(|e| DemoError::Samples(e.to_string()))?;
    let earlier = orchestrator::store::tasks::list_tasks(
        orchestrator.db(),
        &filter,
        Default::default(),
        page,
    )
    .await
    .map_err(|e| DemoError::Samples(e.to_string()))?;
    if earlier.total > 0 {
        return Ok(false);
    }
    let base64 = |csv: &str| base64::engine::general_purpose::STANDARD.encode(csv);
    let april = "name,email,login,profile\n\
                 Fábio Nunes,fabio.nunes@example.com,fabio.nunes,agent\n\
                 Gabi Torres,gabi.torres@example,gabi.torres,agent\n\
                 Ana Souza,ana.duplicate@example.com,ana.souza,agent\n\
                 Hugo Alves,hugo.alves@example.com,hugo.alves,manager\n";
    let mut samples = vec![
        (FIRST_SAMPLE, System::VIVO360, Some(base64(EXAMPLE_USERS)), None),
        (
            "Create the April hires (a bad e-mail, a login taken, an unknown profile)",
            System::VIVO360,
            Some(base64(april)),
            None,
        ),
    ];
    for n in 1..=4 {
        samples.push((
            "Warm-up NOOP task",
            System::NOOP,
            None,
            Some(json!({ "duration_ms": 1500 * n })),
        ));
    }
    samples.push(("Activate CPE DEMO000001", System::CPE, None, Some(sample_activation()?)));
    let registry = orchestrator::store::systems::registry(orchestrator.db())
        .await
        .map_err(|e| DemoError::Samples(e.to_string()))?;
    for (description, system, attachment, payload) in samples {
        let request = TaskRequest {
            description: description.to_owned(),
            system,
            attachment,
            payload,
            priority: None,
            not_before: None,
            max_attempts: None,
            max_run_seconds: None,
            status: None,
        };
        let spec = TaskSpec::parse(request, None, usize::MAX, &registry)
            .map_err(|e| DemoError::Samples(e.to_string()))?;
        create_task(orchestrator.db(), spec, now())
            .await
            .map_err(|e| DemoError::Samples(e.to_string()))?;
    }
    Ok(true)
}

/// The payload of a sample equipment activation, as `POST /api/v1/equipment/cpe/{id}` stores it.
fn sample_activation() -> Result<serde_json::Value, DemoError> {
    let samples = |error: String| DemoError::Samples(error);
    let id = EquipmentId::parse("DEMO000001").map_err(|e| samples(e.to_string()))?;
    let request: CpeRequest = serde_json::from_value(json!({
        "timeoutInSeconds": 14,
        "parameters": {"username": "admin", "password": "admin", "vlan": 534, "interfaces": [1, 2, 3, 4]}
    }))
    .map_err(|e| samples(e.to_string()))?;
    Ok(CpePayload::new(id, request).to_value())
}
