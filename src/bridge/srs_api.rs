//! Asks SRS's HTTP API whether a client still plays (`GET /api/v1/clients/{id}`), so a
//! viewer that watches longer than the lease keeps its stream, and one whose on_stop was
//! lost ends at the next check rather than at the lease.
//!
//! SRS answers `{"code":0,"client":{…}}` for a client it has and a non-zero code (2049,
//! client not found) otherwise. The request is one HTTP/1.1 exchange through hyper's
//! client connection (no pool: a check every half lease per viewer).

use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one check may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A check that got no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    /// `bridge.srs_api` is not `http://host:port`.
    #[error("bridge.srs_api {0:?}: expected http://host:port")]
    BadUrl(String),
    /// Connection, HTTP or timeout.
    #[error("SRS API {url}: {message}")]
    Unreachable { url: String, message: String },
    /// Not JSON with a `code`.
    #[error("SRS API {url}: unexpected answer {answer:?}")]
    Unexpected { url: String, answer: String },
}

/// Whether SRS at `api` (`http://host:port`) still has `client`.
pub(super) async fn still_plays(api: &str, client: &str) -> Result<bool, ApiError> {
    let authority = api
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .ok_or_else(|| ApiError::BadUrl(api.to_owned()))?;
    let url = format!("{api}/api/v1/clients/{client}");
    let unreachable = |message: String| ApiError::Unreachable {
        url: url.clone(),
        message,
    };
    let exchange = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // one exchange: the connection closes after it, which ends `connection`
        let request = hyper::Request::get(format!("/api/v1/clients/{client}"))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONNECTION, "close")
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
                .await
                .map_err(|e| e.to_string())
        };
        let (answer, _) = tokio::join!(exchange, async {
            // a failed connection fails the exchange too, which reports it
            let _ = connection.await;
        });
        answer
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))?
        .map_err(unreachable)?;
    let code = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v["code"].as_i64())
        .ok_or_else(|| ApiError::Unexpected {
            url: url.clone(),
            answer: String::from_utf8_lossy(&answer).chars().take(200).collect(),
        })?;
    Ok(code == 0)
}
