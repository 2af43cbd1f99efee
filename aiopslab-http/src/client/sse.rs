//! Reading Server-Sent Events (`text/event-stream`), the format of the
//! server's two streams: a worker's store events (`GET /workers/{id}/events`,
//! read by the `events` module) and a task's followed log
//! (`GET /tasks/{id}/logs?follow=true`, read by the `follow` module).
//!
//! The parser takes the body chunk by chunk as it arrives and hands back each
//! event once its closing blank line is in; bytes are kept until a line is
//! complete, so a character split across chunks decodes whole. Comment lines
//! (`:` first, the keep-alives) and fields other than `event`, `data` and `id`
//! are skipped, as the format says.

/// One event of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when the event named none).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field, when the event had one.
    pub id: Option<String>,
}

/// Splits a byte stream into [`SseEvent`]s.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    /// The fields of the event being read.
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Takes the next chunk of the body; returns the events it completed, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                events.extend(self.dispatch());
            } else {
                self.field(line);
            }
        }
        events
    }

    /// One `name: value` line of the event being read.
    fn field(&mut self, line: &str) {
        let (name, value) = match line.split_once(':') {
            // A comment (a keep-alive).
            Some(("", _)) => return,
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
    }

    /// The event a blank line closes; none when it had no data (the format
    /// drops those).
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let id = self.id.take();
        let data = self.data.take()?;
        Some(SseEvent {
            event: event.unwrap_or_else(|| "message".to_string()),
            data,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_string),
        }
    }

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut parser = SseParser::default();
        assert!(parser
            .push(b":\n\nevent: log\nid: 7\ndata: {\"message\":\"caf\xc3")
            .is_empty());
        assert_eq!(
            parser.push(b"\xa9\"}\n\nevent: end\r\ndata: completed\r\n\r\n"),
            vec![
                event("log", "{\"message\":\"caf\u{e9}\"}", Some("7")),
                event("end", "completed", None)
            ]
        );
    }

    #[test]
    fn data_lines_join_and_events_without_data_are_dropped() {
        let mut parser = SseParser::default();
        let events = parser.push(b"data: one\ndata:two\nretry: 5\n\nevent: ping\n\ndata\n\n");
        assert_eq!(
            events,
            vec![event("message", "one\ntwo", None), event("message", "", None)]
        );
    }
}
