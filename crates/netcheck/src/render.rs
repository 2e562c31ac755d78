//! The port map for people (table) and spreadsheets (CSV).

use crate::error::Error;
use crate::portmap::Row;
use crate::table::Table;

fn transports(row: &Row) -> String {
    row.transport
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Rows as an aligned table.
pub fn ports_table<'a>(rows: impl IntoIterator<Item = &'a Row>) -> String {
    let mut t = Table::new(&[
        "ID",
        "COMPONENTS",
        "PROTOCOL",
        "PORTS",
        "DIRECTION",
        "TLS",
        "PURPOSE",
        "SOURCE",
    ]);
    for row in rows {
        let purpose = if row.optional {
            format!("(optional) {}", row.purpose)
        } else {
            row.purpose.clone()
        };
        t.row(vec![
            row.id.clone(),
            row.components.join(","),
            row.protocol.clone(),
            format!("{} {}", transports(row), row.ports),
            row.direction.clone(),
            row.tls.to_string(),
            purpose,
            format!("{} § {}", row.source.path, row.source.heading),
        ]);
    }
    t.render()
}

/// Rows as CSV with a header line; list fields are joined with spaces.
pub fn ports_csv<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Result<String, Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Error::input("csv output", "row", e.to_string());
    w.write_record([
        "id",
        "components",
        "protocol",
        "transport",
        "ports",
        "from",
        "to",
        "direction",
        "purpose",
        "tls",
        "hostnames",
        "optional",
        "note",
        "source_path",
        "source_heading",
    ])
    .map_err(fail)?;
    for row in rows {
        w.write_record([
            row.id.as_str(),
            &row.components.join(" "),
            &row.protocol,
            &transports(row).replace('/', " "),
            &row.ports.to_string(),
            &row.from,
            &row.to,
            &row.direction,
            &row.purpose,
            &row.tls.to_string(),
            &row.hostnames.join(" "),
            if row.optional { "true" } else { "false" },
            row.note.as_deref().unwrap_or(""),
            &row.source.path,
            &row.source.heading,
        ])
        .map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::input("csv output", "flush", e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| Error::input("csv output", "utf-8", e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::portmap::PortMap;

    #[test]
    fn csv_round_trips_through_a_reader() {
        let map = PortMap::builtin().unwrap();
        let text = ports_csv(&map.rows).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let records: Vec<_> = r.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), map.rows.len());
        let dns = &records[0];
        assert_eq!(&dns[0], "connect-ad-dns");
        assert_eq!(&dns[3], "tcp udp");
        assert_eq!(
            &dns[13],
            "docs/identity/hybrid/connect/reference-connect-ports.md"
        );
    }

    #[test]
    fn table_lists_every_row_with_its_source() {
        let map = PortMap::builtin().unwrap();
        let text = ports_table(&map.rows);
        assert_eq!(text.lines().count(), map.rows.len() + 1);
        assert!(text.contains("Entra Connect server → domain controllers"));
        assert!(text.contains("tcp 49152-65535"));
    }
}
