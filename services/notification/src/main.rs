//! Runs the notification service alone: `auction-notification [--config FILE]`. The same
//! library is mounted by `auctiond` when everything runs in one process.

fn main() -> std::process::ExitCode {
    auction_platform::service_main::<auction_notification::Service>()
}
