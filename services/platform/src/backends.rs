//! Reaches the shared backends a production process is configured with
//! (Redis for event streams and live fan-out, etcd for bidding leadership)
//! at start-up, so a wrong URL or a server that is down stops the process
//! with a message naming the key instead of failing later, mid-auction.
//! The embedded default configures neither and skips both.

use std::time::Duration;

use crate::config::Config;
use crate::service::StartError;

/// How long start-up waits for each backend.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the configured Redis and etcd and checks that each answers.
pub async fn check(config: &Config) -> Result<(), StartError> {
    if let Some(url) = &config.redis.url {
        let answered = tokio::time::timeout(CONNECT_TIMEOUT, ping_redis(url)).await;
        match answered {
            Ok(Ok(())) => tracing::info!("redis reachable"),
            Ok(Err(error)) => return Err(unreachable("redis.url", error.to_string())),
            Err(_) => return Err(unreachable("redis.url", "no answer within 5 s".to_owned())),
        }
    }
    if !config.etcd.endpoints.is_empty() {
        let answered =
            tokio::time::timeout(CONNECT_TIMEOUT, etcd_status(&config.etcd.endpoints)).await;
        match answered {
            Ok(Ok(version)) => tracing::info!(%version, "etcd reachable"),
            Ok(Err(error)) => return Err(unreachable("etcd.endpoints", error.to_string())),
            Err(_) => {
                return Err(unreachable(
                    "etcd.endpoints",
                    "no answer within 5 s".to_owned(),
                ));
            }
        }
    }
    Ok(())
}

fn unreachable(key: &'static str, message: String) -> StartError {
    StartError::Backend { key, message }
}

async fn ping_redis(url: &str) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(())
}

async fn etcd_status(endpoints: &[String]) -> Result<String, etcd_client::Error> {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    let mut client = etcd_client::Client::connect(endpoints, Some(options)).await?;
    Ok(client.status().await?.version().to_owned())
}
