//! The engine's log frames as lines.

use std::collections::VecDeque;

use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use futures::stream::{self, BoxStream, StreamExt};

use super::connect::{chain, is_connection_error};
use crate::resource::error::ResourceError;
use crate::resource::provider::LogStream;
use crate::resource::types::LogLine;

/// Splits the engine's log frames into lines, per stream.
pub(super) struct LogLines {
    pub(super) raw: BoxStream<'static, Result<LogOutput, EngineError>>,
    pub(super) partial: [Vec<u8>; 2],
    pub(super) ready: VecDeque<Result<LogLine, ResourceError>>,
    pub(super) done: bool,
    pub(super) provider: String,
}

impl LogLines {
    pub(super) fn feed(&mut self, out: LogOutput) {
        let (stderr, bytes) = match out {
            LogOutput::StdErr { message } => (true, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => (false, message),
            LogOutput::StdIn { .. } => return,
        };
        let buf = &mut self.partial[usize::from(stderr)];
        buf.extend_from_slice(&bytes);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim_end_matches('\r')
                .to_string();
            self.ready.push_back(Ok(LogLine { stderr, text }));
        }
    }

    pub(super) fn flush(&mut self) {
        for stderr in [false, true] {
            let buf = std::mem::take(&mut self.partial[usize::from(stderr)]);
            if !buf.is_empty() {
                let text = String::from_utf8_lossy(&buf).into_owned();
                self.ready.push_back(Ok(LogLine { stderr, text }));
            }
        }
    }

    pub(super) fn into_stream(self) -> LogStream {
        Box::pin(stream::unfold(self, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Some((item, st));
                }
                if st.done {
                    return None;
                }
                match st.raw.next().await {
                    Some(Ok(out)) => st.feed(out),
                    Some(Err(e)) => {
                        st.done = true;
                        st.flush();
                        let err = if is_connection_error(&e) {
                            ResourceError::Unavailable {
                                provider: st.provider.clone(),
                                reason: format!("log stream broke: {}", chain(&e)),
                            }
                        } else {
                            ResourceError::Backend(format!("log stream: {}", chain(&e)))
                        };
                        st.ready.push_back(Err(err));
                    }
                    None => {
                        st.done = true;
                        st.flush();
                    }
                }
            }
        }))
    }
}
