//! TLS on the listener: with `server.tls` set, gRPC is served over HTTPS
//! with the configured certificate, and a plain-text client gets nothing.

use auction_platform::config::ServerTlsConfig;
use auction_proto::v1::ListCategoriesRequest;
use auction_proto::v1::catalog_service_client::CatalogServiceClient;
use auction_testkit::spawn_with;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

// Proves a TLS listener answers a client that trusts its certificate, and
// that the same port refuses to talk plain text.
#[tokio::test]
async fn tls_listener_serves_grpc_over_https() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let cert_file = data.path().join("cert.pem");
    let key_file = data.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
    let mut config = auction_platform::Config::embedded_default();
    config.server.listen_address = "127.0.0.1:0".to_owned();
    config.storage.data_dir = data.path().to_owned();
    config.media.local_dir = data.path().join("media");
    config.demo.seed_on_first_start = false;
    config.server.tls = Some(ServerTlsConfig {
        cert_file,
        key_file,
    });
    let app = spawn_with(config, data).await;
    let port = app.address.port();

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certified.cert.pem()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection");
    CatalogServiceClient::new(channel)
        .list_categories(ListCategoriesRequest::default())
        .await
        .expect("an answer over TLS");

    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => CatalogServiceClient::new(channel)
            .list_categories(ListCategoriesRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plain text must not be served on a TLS listener");
    app.stop().await;
}
