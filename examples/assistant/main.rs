//! `assistant`: the shape of an AI assistant behind a WebSocket.
//!
//! The route `/ws/{session}` takes typed query parameters with defaults,
//! `?llm=chatgpt&character_id=2&chatmode=text&token=`; a malformed one
//! rejects the handshake with 400 and the reason. The consumer greets the
//! client with what it parsed, streams each reply word by word (as a model
//! streams tokens), and closes the socket when the client sends `close`.
//!
//! Run: `cargo run -p estuary-examples --bin assistant -- 127.0.0.1:8001`,
//! then `websocat 'ws://127.0.0.1:8001/ws/s-1?llm=chatgpt'` and type a line
//! (`close` ends the session).

use estuary::prelude::*;
use serde::{Deserialize, Serialize};

/// How the client wants to talk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChatMode {
    #[default]
    Text,
    Voice,
}

fn default_llm() -> String {
    "ernie".into()
}

fn default_character() -> u32 {
    1
}

/// The query string, with Django-style defaults.
#[derive(Debug, Deserialize, Serialize)]
struct Params {
    #[serde(default = "default_llm")]
    llm: String,
    #[serde(default = "default_character")]
    character_id: u32,
    #[serde(default)]
    chatmode: ChatMode,
    /// `token=` (empty) means no token.
    #[serde(default, deserialize_with = "estuary::empty_as_none")]
    token: Option<String>,
}

#[derive(Default)]
struct Assistant {
    params: Option<Params>,
}

impl Consumer for Assistant {
    type Event = NoEvent;

    async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
        // A malformed parameter is an error here: the handshake is refused
        // with 400 and the parser's reason.
        let params: Params = ctx.scope().query()?;
        let session: String = ctx.scope().param("session")?;
        ctx.send_json(&serde_json::json!({
            "type": "greeting",
            "session": session,
            "llm": params.llm,
            "character_id": params.character_id,
            "chatmode": params.chatmode,
            "token": params.token.is_some(),
        }))
        .await?;
        self.params = Some(params);
        Ok(Connect::accept())
    }

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        let Some(text) = message.as_text() else {
            return ctx
                .send_json(&serde_json::json!({"type": "error", "message": "send text"}))
                .await;
        };
        if text.trim() == "close" {
            return ctx.close(CloseCode::NORMAL, "bye").await;
        }
        // Stand-in for a model: stream the reply a word at a time; each
        // delta reaches the client as soon as it is sent.
        let llm = self
            .params
            .as_ref()
            .map_or("ernie", |p| p.llm.as_str())
            .to_owned();
        let reply = format!("{llm} heard: {text}");
        for word in reply.split_whitespace() {
            ctx.send_json(&serde_json::json!({"type": "delta", "text": word}))
                .await?;
            tokio::task::yield_now().await;
        }
        ctx.send_json(&serde_json::json!({"type": "done"})).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8001".into());
    let router = Router::new().websocket("/ws/{session}", Assistant::default);
    let server = Server::bind(addr.parse()?).await?;
    let addr = server.local_addr().expect("TCP");
    println!("listening on http://{addr}");
    println!("paths: ws://{addr}/ws/<session>?llm=chatgpt&character_id=2&chatmode=text|voice&token=");
    println!("try:   websocat 'ws://{addr}/ws/s-1?llm=chatgpt'    then type a line (\"close\" ends it)");
    server.serve(router.into_service(), shutdown_signal()).await?;
    Ok(())
}
