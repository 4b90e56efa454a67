//! `/v1/status/leader` and `/v1/status/peers`: Ferry is its own one-node cluster, so the
//! leader is this node. Spring's health indicator calls these; they stay open without ACLs.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::{json_response, ConsulView};

pub(super) fn routes() -> Router<ConsulView> {
    Router::new()
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
}

fn server_address(view: &ConsulView) -> String {
    let address = &view.node().address;
    if address.contains(':') {
        format!("[{address}]:8300")
    } else {
        format!("{address}:8300")
    }
}

async fn leader(State(view): State<ConsulView>) -> Response {
    json_response(&json!(server_address(&view)))
}

async fn peers(State(view): State<ConsulView>) -> Response {
    json_response(&json!([server_address(&view)]))
}
