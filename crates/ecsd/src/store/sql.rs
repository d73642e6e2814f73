//! The one SQL both backends run: statements are written once, with PostgreSQL's `$n`
//! placeholders and the few functions both databases share; [`Dialect::render`] turns them into
//! what SQLite reads. A backend supplies [`Sql`] (run a statement with [`Param`]s, get [`Row`]s
//! back) over its open transaction, and every query of the store is built on that.

use std::borrow::Cow;

use super::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement as this database reads it: `$n` becomes `?n` for SQLite, `{now}` the
    /// current time in epoch seconds by the database's clock, and `{insertion}` the column that
    /// orders a table's rows as they were inserted.
    pub fn render(self, sql: &str) -> Cow<'_, str> {
        let (now, insertion) = match self {
            Dialect::Postgres => ("EXTRACT(EPOCH FROM clock_timestamp())::float8", "position"),
            Dialect::Sqlite => ("((julianday('now') - 2440587.5) * 86400.0)", "rowid"),
        };
        if self == Dialect::Postgres && !sql.contains('{') {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut rest = sql;
        while let Some(i) = rest.find(['$', '{']) {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("{now}") {
                out.push_str(now);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{insertion}") {
                out.push_str(insertion);
                rest = after;
            } else if self == Dialect::Sqlite && rest.starts_with('$') {
                out.push('?');
                rest = &rest[1..];
            } else {
                out.push_str(&rest[..1]);
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

/// A statement parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Real(f64),
    Bool(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// A value read back.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One result row.
#[derive(Clone, Debug, PartialEq)]
pub struct Row(pub Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Worker(format!("a query returned no column {i}")))
    }

    fn mismatch(&self, i: usize, wanted: &str) -> StoreError {
        StoreError::Worker(format!("column {i} is not {wanted}: {:?}", self.0.get(i)))
    }

    pub fn text(&self, i: usize) -> Result<&str, StoreError> {
        self.opt_text(i)?.ok_or_else(|| self.mismatch(i, "text"))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<&str>, StoreError> {
        match self.cell(i)? {
            Cell::Text(s) => Ok(Some(s)),
            Cell::Null => Ok(None),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.cell(i)? {
            Cell::Int(v) => Ok(*v),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    /// The JSON document in column `i`.
    pub fn doc<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        Ok(serde_json::from_str(self.text(i)?)?)
    }
}

/// An event to append to the log.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub cluster: &'a str,
    pub detail_type: &'a str,
    pub time: f64,
    pub body: &'a str,
    pub notice: Option<&'a str>,
}

/// Appends `event` with the next sequence number, at once: right for a backend whose writers
/// commit one at a time, so numbers are taken in commit order.
pub fn append_now(sql: &mut dyn Sql, event: &NewEvent<'_>) -> Result<(), StoreError> {
    // The event takes the number the counter was just moved to: neither statement waits for
    // the other's answer.
    let params = [
        Param::Text(event.account),
        Param::Text(event.region),
        Param::Text(event.cluster),
        Param::Text(event.detail_type),
        Param::Real(event.time),
        Param::Text(event.body),
        event.notice.into(),
    ];
    sql.execute_each(&[
        ("UPDATE counters SET value = value + 1 WHERE name = 'event'", &[]),
        (
            "INSERT INTO events (seq, account, region, cluster, detail_type, time, body, notice)
             VALUES ((SELECT value FROM counters WHERE name = 'event'), $1, $2, $3, $4, $5, $6, $7)",
            &params,
        ),
    ])?;
    Ok(())
}

/// The document (first column) of the first of `rows`, if there is one.
pub fn first_doc(rows: &[Row]) -> Result<Option<String>, StoreError> {
    rows.first().map(|row| row.text(0).map(str::to_owned)).transpose()
}

/// An open transaction of a backend.
pub trait Sql {
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// Runs statements in order, none needing the answer of another (a database across the
    /// network gets them all at once); the rows each changed.
    fn execute_each(&mut self, statements: &[(&str, &[Param<'_>])]) -> Result<Vec<u64>, StoreError> {
        statements
            .iter()
            .map(|(sql, params)| self.execute(sql, params))
            .collect()
    }
    /// Runs a statement whose answer nobody needs and that fails only when the database does (an
    /// upsert by key): a backend may send it with the next statement, and its failure then
    /// fails the transaction.
    fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), StoreError> {
        self.execute(sql, params).map(drop)
    }
    /// Runs queries that do not need each other's answers (a database across the network gets
    /// them all at once); the rows of each.
    fn query_each(&mut self, statements: &[(&str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, StoreError> {
        statements.iter().map(|(sql, params)| self.query(sql, params)).collect()
    }
    /// Appends an event to the log, numbered after every event committed before it and
    /// visible when the transaction commits. A backend may number it only at the commit.
    fn append_event(&mut self, event: &NewEvent<'_>) -> Result<(), StoreError>;
    /// What reads of one record's document each (`SELECT doc ... WHERE` its key) find: the
    /// document, or `None` where there is no such record; all at once. A backend across the
    /// network may answer from what its commit group read before (ahead of its writes, see
    /// [`super::ReadAhead`], or for an earlier write of the group), so every change to a
    /// record must be announced with [`Sql::holds`].
    fn read_records(&mut self, reads: &[(&str, &[Param<'_>])]) -> Result<Vec<Option<String>>, StoreError> {
        self.query_each(reads)?.iter().map(|rows| first_doc(rows)).collect()
    }
    /// Says what the read `sql` of [`Sql::read_records`] finds now, in this transaction: the
    /// document `doc`, or no record, of a row of `table`. Every change to a row of a table that
    /// [`Sql::read_records`] or [`Sql::reads_of`] read says so.
    fn holds(&mut self, _table: &str, _sql: &str, _params: &[Param<'_>], _doc: Option<&str>) {}
    /// Reads whose answers depend only on the rows of one table each (`(table, sql, params)`),
    /// all at once. A backend across the network may answer from what its commit group read
    /// before, until a change to that table is announced ([`Sql::holds`]).
    fn reads_of(&mut self, reads: &[(&str, &str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, StoreError> {
        let statements: Vec<(&str, &[Param<'_>])> = reads.iter().map(|(_, sql, params)| (*sql, *params)).collect();
        self.query_each(&statements)
    }
}

impl dyn Sql + '_ {
    pub fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Worker("a query that returns a row returned none".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_the_clock_render_per_database() {
        let sql = "SELECT doc FROM t WHERE a = $1 AND b > $12 AND c < {now} ORDER BY {insertion}";
        assert_eq!(Dialect::Postgres.render("SELECT $1"), Cow::Borrowed("SELECT $1"));
        assert_eq!(
            Dialect::Sqlite.render(sql),
            "SELECT doc FROM t WHERE a = ?1 AND b > ?12 AND c < ((julianday('now') - 2440587.5) * 86400.0) ORDER BY rowid"
        );
        assert_eq!(
            Dialect::Postgres.render(sql),
            "SELECT doc FROM t WHERE a = $1 AND b > $12 AND c < EXTRACT(EPOCH FROM clock_timestamp())::float8 ORDER BY position"
        );
    }
}
