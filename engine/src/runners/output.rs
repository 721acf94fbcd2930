//! Output streaming: lines a run writes go to the store as they are
//! produced (`execution.output` events), so `squall execution tail`, chat
//! progress and the event stream follow a running execution line by line.

use tokio::sync::mpsc;

use crate::execution::now_ms;
use crate::secrets::Secrets;
use crate::store::{OutputLine, Store};

/// A line longer than this is passed on in pieces (a progress bar without
/// newlines must not hold everything back until the end).
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Where a run sends its output lines. The default sends them nowhere (runs
/// without a stored execution: inline workflow tasks, unit tests).
#[derive(Clone, Default)]
pub struct OutputSink {
    tx: Option<mpsc::UnboundedSender<OutputLine>>,
}

/// The task writing one execution's lines; [`OutputWriter::finish`] waits
/// until every line sent is stored.
pub struct OutputWriter {
    task: tokio::task::JoinHandle<()>,
}

impl OutputSink {
    /// A sink writing to `store` for `execution_id`, masking `secrets`.
    /// Lines are written in order; whatever arrives while a write is in
    /// flight goes in the next one (one commit per batch, not per line).
    pub fn to_store(store: Store, execution_id: String, secrets: Secrets) -> (Self, OutputWriter) {
        let (tx, mut rx) = mpsc::unbounded_channel::<OutputLine>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(line) = rx.recv().await {
                batch.push(line);
                while batch.len() < 500 {
                    match rx.try_recv() {
                        Ok(line) => batch.push(line),
                        Err(_) => break,
                    }
                }
                for line in &mut batch {
                    if !secrets.is_empty() {
                        line.text = secrets.scrub_text(&line.text);
                    }
                }
                if let Err(err) = store.append_output(&execution_id, &batch).await {
                    tracing::warn!(execution = %execution_id, error = %err, lines = batch.len(), "storing output lines failed; they are kept in the execution's final output only");
                }
                batch.clear();
            }
        });
        (Self { tx: Some(tx) }, OutputWriter { task })
    }

    /// Pass on one line (without its newline).
    pub fn line(&self, stream: &'static str, text: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(OutputLine {
                stream,
                text: text.to_owned(),
                at: now_ms(),
            });
        }
    }

    pub fn is_active(&self) -> bool {
        self.tx.is_some()
    }
}

impl OutputWriter {
    /// Wait until every line is stored (all sinks must be dropped first).
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

/// Splits a byte stream into lines for a sink.
pub struct LineSplitter<'a> {
    sink: &'a OutputSink,
    stream: &'static str,
    partial: Vec<u8>,
}

impl<'a> LineSplitter<'a> {
    pub fn new(sink: &'a OutputSink, stream: &'static str) -> Self {
        Self {
            sink,
            stream,
            partial: Vec::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.sink.is_active() {
            return;
        }
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            self.emit();
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE_BYTES {
            let tail = self.partial.split_off(MAX_LINE_BYTES);
            self.emit();
            self.partial = tail;
        }
    }

    fn emit(&mut self) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        self.sink
            .line(self.stream, &String::from_utf8_lossy(&self.partial));
        self.partial.clear();
    }

    /// The last line, if it had no newline.
    pub fn finish(mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<String> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sink = OutputSink { tx: Some(tx) };
        let mut split = LineSplitter::new(&sink, "stdout");
        for chunk in chunks {
            split.feed(chunk);
        }
        split.finish();
        drop(sink);
        let mut out = Vec::new();
        while let Ok(line) = rx.try_recv() {
            out.push(line.text);
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_come_out_whole() {
        assert_eq!(
            collect(&[b"one\ntw", b"o\r\n", b"\nthree"]),
            vec!["one", "two", "", "three"]
        );
    }

    #[test]
    fn a_long_line_without_newline_is_passed_on_in_pieces() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let lines = collect(&[&long]);
        assert_eq!(
            lines.iter().map(String::len).collect::<Vec<_>>(),
            vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 10]
        );
    }
}
