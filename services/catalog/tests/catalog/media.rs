//! Media over gRPC: client-streamed uploads into the object store, content
//! sniffing against the allow-list, size limits, thumbnails, idempotent
//! retries, deletion, and flat memory for a 200 MiB upload.

use std::time::Duration;

use auction_proto::v1 as pb;
use auction_testkit::{Backend, TestApp, spawn_app, with_token};
use sha2::Digest as _;
use tonic::Code;

use crate::support::{User, WAIT, catalog, categories, create_item, reason, request_id, seller};

fn start(
    item_id: &str,
    content_type: &str,
    size_bytes: u64,
    request_id: &str,
) -> pb::UploadMediaRequest {
    pb::UploadMediaRequest {
        payload: Some(pb::upload_media_request::Payload::Start(
            pb::UploadMediaStart {
                request_id: request_id.to_owned(),
                metadata: Some(pb::MediaUploadMetadata {
                    item_id: item_id.to_owned(),
                    filename: "C:\\photos\\front.png".to_owned(),
                    content_type: content_type.to_owned(),
                    size_bytes,
                    sha256: String::new(),
                }),
            },
        )),
    }
}

fn chunk(bytes: &[u8]) -> pb::UploadMediaRequest {
    pb::UploadMediaRequest {
        payload: Some(pb::upload_media_request::Payload::Chunk(bytes.to_vec())),
    }
}

async fn upload(
    app: &TestApp,
    user: &User,
    messages: Vec<pb::UploadMediaRequest>,
) -> Result<pb::Media, tonic::Status> {
    catalog(app)
        .await
        .upload_media(with_token(tokio_stream::iter(messages), &user.token))
        .await
        .map(|response| response.into_inner().media.unwrap())
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

async fn item_media(app: &TestApp, user: &User, item_id: &str) -> Vec<pb::Media> {
    catalog(app)
        .await
        .get_item(with_token(
            pb::GetItemRequest {
                item_id: item_id.to_owned(),
            },
            &user.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap()
        .media
}

// Proves an image is streamed to the store, sniffed, thumbnailed (160, 480,
// 1024 px WebP) and served by URL; a retry replays; deletion removes it.
#[tokio::test]
async fn image_upload_is_stored_and_thumbnailed() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let item = create_item(&app, &alice, "Lamp", "", &categories["home"]).await;
    let bytes = png(1_200, 600);
    let key = request_id();
    let mut messages = vec![start(&item.item_id, "image/png", bytes.len() as u64, &key)];
    messages.extend(bytes.chunks(64 * 1024).map(chunk));
    let media = upload(&app, &alice, messages.clone()).await.unwrap();
    assert_eq!(media.kind, pb::MediaKind::Image as i32);
    assert_eq!(media.content_type, "image/png");
    assert_eq!(media.filename, "front.png", "path components stripped");
    assert_eq!(media.size_bytes, bytes.len() as u64);
    assert_eq!(media.sha256, format!("{:x}", sha2::Sha256::digest(&bytes)));
    assert_eq!(media.position, 0);
    assert!(
        media.url.ends_with(&format!(
            "/media/items/{}/{}/original",
            item.item_id, media.media_id
        )),
        "{}",
        media.url
    );
    let stored = std::fs::read(app.config.media.local_dir.join(format!(
        "items/{}/{}/original",
        item.item_id, media.media_id
    )))
    .unwrap();
    assert_eq!(stored, bytes);

    // The URL serves the bytes (plain HTTP GET on the app's own listener).
    let (status, content_type, body) = http_get(&app, &media.url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(body, bytes);
    let (missing, _, _) = http_get(&app, &media.url.replace("/original", "/thumb-9.webp")).await;
    assert_eq!(missing, 404);
    // The same over plain HTTP/1.1, as a browser's <img> fetches it.
    let (status, content_type, body) = http1_get(&media.url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(body, bytes);

    // Thumbnails arrive in the background.
    let deadline = tokio::time::Instant::now() + WAIT;
    let ready = loop {
        let media = item_media(&app, &alice, &item.item_id).await;
        if media[0].status != pb::MediaStatus::Processing as i32 {
            break media[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "thumbnails never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready.status, pb::MediaStatus::Ready as i32);
    assert_eq!((ready.width, ready.height), (1_200, 600));
    let sizes: Vec<(u32, u32)> = ready
        .thumbnails
        .iter()
        .map(|thumbnail| (thumbnail.width, thumbnail.height))
        .collect();
    assert_eq!(sizes, [(160, 80), (480, 240), (1_024, 512)]);
    assert!(
        ready
            .thumbnails
            .iter()
            .all(|thumbnail| thumbnail.content_type == "image/webp")
    );
    let thumbnail_key = ready.thumbnails[1].url.split("/media/").nth(1).unwrap();
    assert!(
        thumbnail_key.ends_with("/thumb-480.webp"),
        "{thumbnail_key}"
    );
    let thumbnail = std::fs::read(app.config.media.local_dir.join(thumbnail_key)).unwrap();
    assert_eq!(&thumbnail[8..12], b"WEBP");
    let (status, content_type, served) = http_get(&app, &ready.thumbnails[1].url).await;
    assert_eq!((status, content_type.as_str()), (200, "image/webp"));
    assert_eq!(served, thumbnail);

    // The same upload again (same request id): the original answer, no second media.
    let replay = catalog(&app)
        .await
        .upload_media(with_token(tokio_stream::iter(messages), &alice.token))
        .await
        .unwrap();
    assert_eq!(
        replay.metadata().get("auction-idempotent-replay").unwrap(),
        "true"
    );
    assert_eq!(replay.into_inner().media.unwrap().media_id, media.media_id);
    assert_eq!(item_media(&app, &alice, &item.item_id).await.len(), 1);

    // A second image goes last; media_order puts it first.
    let small = png(30, 20);
    let second = upload(
        &app,
        &alice,
        vec![
            start(
                &item.item_id,
                "image/png",
                small.len() as u64,
                &request_id(),
            ),
            chunk(&small),
        ],
    )
    .await
    .unwrap();
    assert_eq!(second.position, 1);
    let reorder = |order: Vec<String>| pb::UpdateItemRequest {
        request_id: request_id(),
        item_id: item.item_id.clone(),
        item: Some(pb::ItemUpdate {
            media_order: order,
            ..pb::ItemUpdate::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["media_order".to_owned()],
        }),
        expected_version: 0,
    };
    let reordered = catalog(&app)
        .await
        .update_item(with_token(
            reorder(vec![second.media_id.clone(), media.media_id.clone()]),
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    let order: Vec<&str> = reordered
        .media
        .iter()
        .map(|media| media.media_id.as_str())
        .collect();
    assert_eq!(order, [second.media_id.as_str(), media.media_id.as_str()]);
    let incomplete = catalog(&app)
        .await
        .update_item(with_token(
            reorder(vec![second.media_id.clone()]),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&incomplete), "VALIDATION_FAILED");

    let after = catalog(&app)
        .await
        .delete_media(with_token(
            pb::DeleteMediaRequest {
                request_id: request_id(),
                media_id: media.media_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert_eq!(after.media.len(), 1);
    assert_eq!(
        (after.media[0].media_id.as_str(), after.media[0].position),
        (second.media_id.as_str(), 0)
    );
    assert!(
        !app.config
            .media
            .local_dir
            .join(format!(
                "items/{}/{}/original",
                item.item_id, media.media_id
            ))
            .exists()
    );
    app.stop().await;
}

// Proves invalid uploads are refused with INVALID_ARGUMENT (or the contract's
// code) and the reason: wrong content, types off the allow-list, sizes over
// the limit or not matching, a stream not starting with `start`, a wrong
// checksum, someone else's item.
#[tokio::test]
async fn invalid_media_is_refused_with_reasons() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let item = create_item(&app, &alice, "Lamp", "", &categories["home"]).await;
    let pdf = b"%PDF-1.7\n1 0 obj << >> endobj\n".to_vec();
    let bytes = png(40, 40);
    let mut with_sha = start(
        &item.item_id,
        "image/png",
        bytes.len() as u64,
        &request_id(),
    );
    if let Some(pb::upload_media_request::Payload::Start(start)) = &mut with_sha.payload {
        start.metadata.as_mut().unwrap().sha256 = "0".repeat(64);
    }
    let cases: Vec<(Vec<pb::UploadMediaRequest>, Code, &str)> = vec![
        (
            vec![
                start(&item.item_id, "image/png", pdf.len() as u64, &request_id()),
                chunk(&pdf),
            ],
            Code::InvalidArgument,
            "MEDIA_TYPE_UNSUPPORTED",
        ),
        (
            vec![
                start(
                    &item.item_id,
                    "application/pdf",
                    pdf.len() as u64,
                    &request_id(),
                ),
                chunk(&pdf),
            ],
            Code::InvalidArgument,
            "MEDIA_TYPE_UNSUPPORTED",
        ),
        (
            vec![start(
                &item.item_id,
                "image/png",
                21 * 1024 * 1024,
                &request_id(),
            )],
            Code::InvalidArgument,
            "MEDIA_SIZE_INVALID",
        ),
        (
            vec![
                start(
                    &item.item_id,
                    "image/png",
                    bytes.len() as u64 + 10,
                    &request_id(),
                ),
                chunk(&bytes),
            ],
            Code::InvalidArgument,
            "MEDIA_SIZE_INVALID",
        ),
        (
            vec![
                start(&item.item_id, "image/png", 10, &request_id()),
                chunk(&bytes),
            ],
            Code::InvalidArgument,
            "MEDIA_SIZE_INVALID",
        ),
        (
            vec![chunk(&bytes)],
            Code::InvalidArgument,
            "VALIDATION_FAILED",
        ),
        (
            vec![with_sha, chunk(&bytes)],
            Code::FailedPrecondition,
            "UPLOAD_INVALID",
        ),
    ];
    for (messages, code, expected) in cases {
        let status = upload(&app, &alice, messages).await.unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (code, expected),
            "{status:?}"
        );
    }
    let bob = seller(&app);
    let foreign = upload(
        &app,
        &bob,
        vec![
            start(
                &item.item_id,
                "image/png",
                bytes.len() as u64,
                &request_id(),
            ),
            chunk(&bytes),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&foreign), "NOT_OWNER");
    // Nothing refused was kept.
    assert!(item_media(&app, &alice, &item.item_id).await.is_empty());
    app.stop().await;
}

/// The resident memory of this process (client and server both run here).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kilobytes: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kilobytes * 1024
}

// Proves a 200 MiB upload completes while the resident memory of the process
// (server and client together) grows by less than 50 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_keeps_memory_flat() {
    const SIZE: u64 = 200 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let item = create_item(&app, &alice, "Product video", "", &categories["home"]).await;
    // An MP4 header (ftyp box, brand isom) so the content sniffs as video/mp4.
    let header: Vec<u8> = [0, 0, 0, 0x18]
        .iter()
        .copied()
        .chain(*b"ftypisom")
        .chain([0, 0, 2, 0])
        .chain(*b"isomiso2")
        .collect();
    let make_chunk = move |index: u64| {
        let mut bytes = vec![(index % 251) as u8; CHUNK];
        if index == 0 {
            bytes[..header.len()].copy_from_slice(&header);
        }
        chunk(&bytes)
    };
    // Warm up: a small upload first, so one-off allocations are not counted.
    let small = item_for_warmup(&app, &alice, &categories["home"]).await;
    upload(
        &app,
        &alice,
        vec![
            start(&small, "video/mp4", CHUNK as u64, &request_id()),
            make_chunk(0),
        ],
    )
    .await
    .unwrap();

    let baseline = resident_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(resident_bytes(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let messages = futures::stream::iter(
        std::iter::once(start(&item.item_id, "video/mp4", SIZE, &request_id()))
            .chain((0..SIZE / CHUNK as u64).map(make_chunk)),
    );
    let media = catalog(&app)
        .await
        .upload_media(with_token(messages, &alice.token))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap();
    let elapsed = started.elapsed();
    sampler.abort();
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline);
    println!(
        "200 MiB upload in {:.1} s; resident memory {} MiB before, peak growth {:.1} MiB",
        elapsed.as_secs_f64(),
        baseline / (1024 * 1024),
        growth as f64 / (1024.0 * 1024.0)
    );
    assert_eq!(media.size_bytes, SIZE);
    assert_eq!(media.status, pb::MediaStatus::Ready as i32);
    let stored = std::fs::metadata(app.config.media.local_dir.join(format!(
        "items/{}/{}/original",
        item.item_id, media.media_id
    )))
    .unwrap();
    assert_eq!(stored.len(), SIZE);
    assert!(
        growth < 50 * 1000 * 1000,
        "resident memory grew by {growth} bytes"
    );
    app.stop().await;
}

/// A plain HTTP/1.1 GET on a fresh connection: status, content type, body.
async fn http1_get(url: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let url: tonic::codegen::http::Uri = url.parse().unwrap();
    let authority = url.authority().unwrap().as_str().to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n\r\n",
        url.path()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_owned(),
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = response[split + 4..].to_vec();
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let line_end = rest
                .windows(2)
                .position(|window| window == b"\r\n")
                .unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = decoded;
    }
    (status, content_type, body)
}

/// A GET over HTTP/2: status, content type, body.
async fn http_get(app: &TestApp, url: &str) -> (u16, String, Vec<u8>) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let request = tonic::codegen::http::Request::get(url)
        .body(tonic::body::Body::empty())
        .unwrap();
    let response = app.channel().await.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

async fn item_for_warmup(app: &TestApp, user: &User, category: &str) -> String {
    create_item(app, user, "Warm-up", "", category)
        .await
        .item_id
}

// Proves the resumable chunked upload (grpc-web's alternative to the client
// stream): begin (a replay reports the bytes received), chunks at their
// offsets (an identical retry is a no-op, other bytes or a gap are refused),
// complete only when every byte is there, then the same media again.
#[tokio::test]
async fn chunked_upload_resumes_and_completes_once() {
    let app = spawn_app(Backend::Sqlite).await;
    let categories = categories(&app).await;
    let alice = seller(&app);
    let item = create_item(&app, &alice, "Lamp", "", &categories["home"]).await;
    let bytes = png(400, 300);
    let mut client = catalog(&app).await;
    let begin = pb::BeginMediaUploadRequest {
        request_id: request_id(),
        metadata: Some(pb::MediaUploadMetadata {
            item_id: item.item_id.clone(),
            filename: "lamp.png".to_owned(),
            content_type: "image/png".to_owned(),
            size_bytes: bytes.len() as u64,
            sha256: format!("{:x}", sha2::Sha256::digest(&bytes)),
        }),
    };
    let session = client
        .begin_media_upload(with_token(begin.clone(), &alice.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (session.max_chunk_bytes, session.received_bytes),
        (1024 * 1024, 0)
    );
    let chunk_size = bytes.len() / 3 + 1;
    let pieces: Vec<&[u8]> = bytes.chunks(chunk_size).collect();
    let send = |offset: usize, data: &[u8]| pb::UploadMediaChunkRequest {
        request_id: request_id(),
        upload_id: session.upload_id.clone(),
        offset: offset as u64,
        data: data.to_vec(),
    };
    let received = client
        .upload_media_chunk(with_token(send(0, pieces[0]), &alice.token))
        .await
        .unwrap()
        .into_inner()
        .received_bytes;
    assert_eq!(received, pieces[0].len() as u64);
    // The same chunk again: a no-op.
    let again = client
        .upload_media_chunk(with_token(send(0, pieces[0]), &alice.token))
        .await
        .unwrap()
        .into_inner()
        .received_bytes;
    assert_eq!(again, received);
    let different = client
        .upload_media_chunk(with_token(
            send(0, &pieces[1][..pieces[0].len().min(pieces[1].len())]),
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (different.code(), reason(&different).as_str()),
        (Code::FailedPrecondition, "UPLOAD_INVALID")
    );
    let gap = client
        .upload_media_chunk(with_token(send(chunk_size * 2, pieces[2]), &alice.token))
        .await
        .unwrap_err();
    assert_eq!(reason(&gap), "UPLOAD_INVALID");
    // Resuming: Begin's replay reports what arrived.
    let resumed = client
        .begin_media_upload(with_token(begin, &alice.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (resumed.upload_id.as_str(), resumed.received_bytes),
        (session.upload_id.as_str(), received)
    );
    let early = client
        .complete_media_upload(with_token(
            pb::CompleteMediaUploadRequest {
                request_id: request_id(),
                upload_id: session.upload_id.clone(),
            },
            &alice.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&early), "UPLOAD_INVALID");
    client
        .upload_media_chunk(with_token(send(chunk_size, pieces[1]), &alice.token))
        .await
        .unwrap();
    client
        .upload_media_chunk(with_token(send(chunk_size * 2, pieces[2]), &alice.token))
        .await
        .unwrap();
    let bob = seller(&app);
    let foreign = client
        .complete_media_upload(with_token(
            pb::CompleteMediaUploadRequest {
                request_id: request_id(),
                upload_id: session.upload_id.clone(),
            },
            &bob.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&foreign), "NOT_OWNER");
    let complete = pb::CompleteMediaUploadRequest {
        request_id: request_id(),
        upload_id: session.upload_id.clone(),
    };
    let media = client
        .complete_media_upload(with_token(complete.clone(), &alice.token))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap();
    assert_eq!(media.size_bytes, bytes.len() as u64);
    assert_eq!(media.filename, "lamp.png");
    let stored = std::fs::read(app.config.media.local_dir.join(format!(
        "items/{}/{}/original",
        item.item_id, media.media_id
    )))
    .unwrap();
    assert_eq!(stored, bytes);
    assert!(
        !app.config
            .media
            .local_dir
            .join(format!("uploads/{}", session.upload_id))
            .read_dir()
            .is_ok_and(|mut entries| entries.next().is_some())
    );
    let twice = client
        .complete_media_upload(with_token(complete, &alice.token))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap();
    assert_eq!(twice.media_id, media.media_id);
    assert_eq!(item_media(&app, &alice, &item.item_id).await.len(), 1);
    app.stop().await;
}
