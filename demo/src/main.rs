//! `botline-demo`: the orchestrator, the simulators, three bots and sample tasks in one process,
//! against the local RabbitMQ. It takes the orchestrator's flags (`botline-demo --help`).

use botline_demo::{DemoAddresses, StandInPorts, run_demo};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Botline in one process: the orchestrator, the Vivo360 portal, equipment service and
/// notification sink stand-ins, three bot agents and a few sample tasks, against the local
/// RabbitMQ.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: orchestrator::Config,
    #[command(flatten)]
    ports: StandInPorts,
    #[command(flatten)]
    log: broker_config::logging::LogArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Cli { config, ports, log } = Cli::parse();
    orchestrator::startup::init_logging(log.log_format);
    let shutdown = CancellationToken::new();
    broker_config::signal::stop_on_signals(
        shutdown.clone(),
        "the bots' unacknowledged messages go back to their queues, and the offers and runs this \
         demo held are taken back by the sweeps of the next orchestrator (or demo) on its database",
    );
    match run_demo(config, ports, shutdown, print_banner).await {
        Ok(()) => {
            tracing::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            // One line, no backtrace: this is for the person at the terminal.
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_banner(at: &DemoAddresses) {
    let samples = if at.seeded {
        "Sample tasks were submitted; watch them go WAITING -> ASSIGNED -> RUNNING -> COMPLETE"
    } else {
        "The sample tasks are those an earlier run submitted to this database (not added again)"
    };
    println!(
        "\nBotline demo running. Ctrl-C stops it.\n\
         \n  Dashboard       http://{api}/\
         \n  API             http://{api}/api/v1/tasks   (OpenAPI: http://{api}/api/v1/openapi.json)\
         \n  bots            bot-1, bot-2: VIVO360+CPE+NOTIFY+NOOP; bot-3: NOOP\
         \n  Vivo360 portal  http://{portal}/_control/users   (users the bots created)\
         \n  equipment       https://{equipment}/_control/requests   (CPE configurations; self-signed: curl -k)\
         \n  notifications   http://{sink}/_control/received   (what incident communications delivered)\
         \n  RabbitMQ UI     http://127.0.0.1:15672   (guest/guest: queues botline.bot.*, exchanges botline.*)\
         \n  CPE activation  curl -s http://{api}/api/v1/equipment/cpe/CPE000042 -d '{{\"timeoutInSeconds\":14,\"parameters\":{{\"vlan\":534}}}}'\
         \n\n{samples}:\
         \n  curl -s 'http://{api}/api/v1/tasks?order=oldest' | python3 -m json.tool\n",
        api = at.api,
        portal = at.portal,
        equipment = at.equipment,
        sink = at.sink,
    );
}
