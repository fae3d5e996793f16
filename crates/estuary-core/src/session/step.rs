//! What the session loop does after each turn: go on, or close (and how).

use crate::close::{CloseCode, CloseFrame};

/// What the loop does next.
pub(super) enum Step {
    Continue,
    Close(Closing),
}

/// How the connection closes.
pub(super) struct Closing {
    /// The close frame to send (`None`: the transport is gone or the client closed).
    pub(super) frame: Option<CloseFrame>,
    /// The code handed to `disconnect`.
    pub(super) code: CloseCode,
    pub(super) client_closed: bool,
    /// Whether messages still queued should be written before the close frame
    /// (not when the transport failed or the client stopped reading).
    pub(super) drain: bool,
}

impl Closing {
    pub(super) fn server(code: CloseCode, reason: &str, drain: bool) -> Step {
        let frame = code.is_sendable().then(|| CloseFrame::new(code, reason));
        Step::Close(Closing {
            frame,
            code,
            client_closed: false,
            drain,
        })
    }

    pub(super) fn gone(code: CloseCode, client_closed: bool) -> Step {
        Step::Close(Closing {
            frame: None,
            code,
            client_closed,
            drain: false,
        })
    }
}
