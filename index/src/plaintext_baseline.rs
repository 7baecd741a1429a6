//! The plaintext baseline of the search benchmarks (feature `plaintext-baseline`;
//! no server code uses it): the same `field:value` terms as the blind index, in the
//! clear, answered exactly by Tantivy alone. `benches/search.rs` and `vault-bench`
//! measure the blind index against it.

use std::path::Path;

use tantivy::collector::DocSetCollector;
use tantivy::query::{AllQuery, BooleanQuery, Occur, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema, Value, STORED, STRING};
use tantivy::{Index, IndexReader, IndexWriter, TantivyDocument, Term};

use crate::fields::{search_terms, Fields};
use crate::query::Query;

/// A plaintext index of documents' search terms.
pub struct PlainIndex {
    writer: IndexWriter,
    reader: IndexReader,
    id: tantivy::schema::Field,
    term: tantivy::schema::Field,
    /// Documents added.
    pub documents: usize,
}

impl PlainIndex {
    /// An empty index in `dir` (one indexing thread, as the blind index has).
    pub fn create(dir: &Path) -> tantivy::Result<PlainIndex> {
        let mut builder = Schema::builder();
        let id = builder.add_text_field("id", STRING | STORED);
        let term = builder.add_text_field("term", STRING);
        std::fs::create_dir_all(dir)?;
        let index = Index::create_in_dir(dir, builder.build())?;
        let writer = index.writer_with_num_threads(1, 50_000_000)?;
        let reader = index.reader()?;
        Ok(PlainIndex {
            writer,
            reader,
            id,
            term,
            documents: 0,
        })
    }

    /// Adds a document's terms.
    pub fn add(&mut self, id: &str, fields: &Fields) -> tantivy::Result<()> {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.id, id);
        for (field, value) in search_terms(fields) {
            doc.add_text(self.term, format!("{}:{value}", field.name()));
        }
        self.writer.add_document(doc)?;
        self.documents += 1;
        Ok(())
    }

    /// Makes everything added searchable.
    pub fn commit(&mut self) -> tantivy::Result<()> {
        self.writer.commit()?;
        self.reader.reload()
    }

    fn compile(&self, query: &Query) -> Box<dyn tantivy::query::Query> {
        match query {
            Query::Term(field, value) => Box::new(TermQuery::new(
                Term::from_field_text(self.term, &format!("{}:{value}", field.name())),
                IndexRecordOption::Basic,
            )),
            Query::And(children) => Box::new(BooleanQuery::new(
                children
                    .iter()
                    .map(|c| (Occur::Must, self.compile(c)))
                    .collect(),
            )),
            Query::Or(children) => Box::new(BooleanQuery::new(
                children
                    .iter()
                    .map(|c| (Occur::Should, self.compile(c)))
                    .collect(),
            )),
            Query::Not(child) => Box::new(BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(AllQuery) as Box<dyn tantivy::query::Query>,
                ),
                (Occur::MustNot, self.compile(child)),
            ])),
        }
    }

    /// The ids of the documents matching `query`.
    pub fn search(&self, query: &Query) -> tantivy::Result<Vec<String>> {
        let searcher = self.reader.searcher();
        let addresses = searcher.search(self.compile(query).as_ref(), &DocSetCollector)?;
        addresses
            .into_iter()
            .map(|a| {
                let doc: TantivyDocument = searcher.doc(a)?;
                Ok(doc
                    .get_first(self.id)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{Field, FieldsBuilder};

    #[test]
    fn plaintext_index_answers_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = PlainIndex::create(&dir.path().join("plain")).unwrap();
        let mut a = FieldsBuilder::new();
        a.add(Field::ClaimId, "PCN-1");
        a.add(Field::PatientName, "Doe, Jane");
        let mut b = FieldsBuilder::new();
        b.add(Field::ClaimId, "PCN-2");
        b.add(Field::PatientName, "DOE, JANE");
        index.add("a", &a.build()).unwrap();
        index.add("b", &b.build()).unwrap();
        index.commit().unwrap();
        let q = |s: &str| {
            let mut ids = index.search(&Query::parse(s).unwrap()).unwrap();
            ids.sort();
            ids
        };
        assert_eq!(q("claim_id:pcn1"), ["a"]);
        assert_eq!(q("patient_name:\"jane doe\""), ["a", "b"]);
        assert_eq!(q("patient_name:\"jane doe\" AND NOT claim_id:PCN2"), ["a"]);
    }
}
