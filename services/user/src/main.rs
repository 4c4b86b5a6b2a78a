//! Runs the user service alone: `auction-user [--config FILE]`. The same
//! library is mounted by `auctiond` when everything runs in one process.

fn main() -> std::process::ExitCode {
    auction_platform::service_main::<auction_user::Service>()
}
