//! Resources and references: the resources a document holds (the root, Bundle
//! entries, contained resources) and the resolution of a `Reference.reference`
//! to one of them.
//!
//! A reference resolves, in this order: `#id` to a resource contained in the
//! resource being read; a Bundle entry whose `fullUrl` is the reference
//! (`urn:uuid:…`, an absolute URL); a Bundle entry whose `resourceType` and `id`
//! are the reference's last `Type/id` (relative `Patient/123`, absolute
//! `https://host/fhir/Patient/123`, either with `/_history/2`). Anything else does
//! not resolve, and the caller falls back on the reference's `display` or
//! `identifier`.

use std::collections::HashMap;

use serde_json::Value;

use super::json::{error, Node, Res};

/// The most resources (Bundle entries and contained resources, all Bundles of a
/// document together) read from one document; the rest are skipped. Work per
/// resource is bounded by its size and references resolve through hash maps, so
/// this and the input size bound the work.
pub(super) const MAX_RESOURCES: usize = 100_000;

/// How many more resources may be read.
#[derive(Debug)]
pub(super) struct Budget {
    remaining: usize,
}

impl Budget {
    /// The budget of one document.
    pub fn new() -> Self {
        Budget {
            remaining: MAX_RESOURCES,
        }
    }

    /// Takes one resource from the budget; false when it is spent.
    fn take(&mut self) -> bool {
        if self.remaining == 0 {
            return false;
        }
        self.remaining -= 1;
        true
    }
}

/// A resource: an object with a string `resourceType`.
#[derive(Debug, Clone)]
pub(super) struct Resource<'v> {
    /// The resource's object and path.
    pub node: Node<'v>,
    /// Its `resourceType`.
    pub kind: &'v str,
}

impl<'v> Resource<'v> {
    /// The resource at `path`: an object with a string `resourceType`.
    pub fn at(value: &'v Value, path: String) -> Res<Resource<'v>> {
        let node = Node::at(value, path)?;
        match node.obj.get("resourceType") {
            Some(Value::String(kind)) => Ok(Resource { node, kind }),
            _ => Err(error(
                format!("{}.resourceType", node.path),
                "expected a FHIR resource: an object with a string resourceType",
            )),
        }
    }

    /// The resource's `id`, if any.
    fn id(&self) -> Res<Option<&'v str>> {
        self.node.str("id")
    }
}

/// The resources contained in one resource, by id.
#[derive(Debug, Default)]
pub(super) struct Contained<'v> {
    resources: Vec<Resource<'v>>,
    by_id: HashMap<&'v str, usize>,
}

impl<'v> Contained<'v> {
    /// The resources in `container.contained`.
    pub fn of(container: &Node<'v>, budget: &mut Budget) -> Res<Contained<'v>> {
        let mut out = Contained::default();
        let Some(value) = container.obj.get("contained").filter(|v| !v.is_null()) else {
            return Ok(out);
        };
        let Value::Array(items) = value else {
            return Err(error(
                format!("{}.contained", container.path),
                "expected an array",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                continue;
            }
            if !budget.take() {
                break;
            }
            let resource = Resource::at(item, format!("{}.contained[{i}]", container.path))?;
            if let Some(id) = resource.id()? {
                out.by_id.entry(id).or_insert(out.resources.len());
            }
            out.resources.push(resource);
        }
        Ok(out)
    }
}

/// The entries of a Bundle, by `fullUrl` and by type and id.
#[derive(Debug, Default)]
pub(super) struct BundleIndex<'v> {
    /// The entries' resources, in order (entries without a resource left out).
    pub entries: Vec<Resource<'v>>,
    by_full_url: HashMap<&'v str, usize>,
    by_type_id: HashMap<(&'v str, &'v str), usize>,
}

impl<'v> BundleIndex<'v> {
    /// The entries of `bundle` (a Bundle resource).
    pub fn of(bundle: &Node<'v>, budget: &mut Budget) -> Res<BundleIndex<'v>> {
        let mut out = BundleIndex::default();
        let Some(value) = bundle.obj.get("entry").filter(|v| !v.is_null()) else {
            return Ok(out);
        };
        let Value::Array(items) = value else {
            return Err(error(format!("{}.entry", bundle.path), "expected an array"));
        };
        for (i, item) in items.iter().enumerate() {
            if item.is_null() {
                continue;
            }
            if !budget.take() {
                break;
            }
            let entry = Node::at(item, format!("{}.entry[{i}]", bundle.path))?;
            let full_url = entry.str("fullUrl")?;
            // An entry without a resource (a search outcome, a transaction
            // response) holds nothing to read.
            let Some(resource) = entry.obj.get("resource").filter(|v| !v.is_null()) else {
                continue;
            };
            let resource = Resource::at(resource, format!("{}.resource", entry.path))?;
            let n = out.entries.len();
            if let Some(url) = full_url {
                out.by_full_url.entry(url).or_insert(n);
            }
            if let Some(id) = resource.id()? {
                out.by_type_id.entry((resource.kind, id)).or_insert(n);
            }
            out.entries.push(resource);
        }
        Ok(out)
    }
}

/// Where references of one resource resolve: its contained resources and the
/// Bundle it is an entry of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope<'a, 'v> {
    /// The resource's contained resources.
    pub contained: &'a Contained<'v>,
    /// The Bundle holding the resource, if any.
    pub bundle: Option<&'a BundleIndex<'v>>,
}

impl<'a, 'v> Scope<'a, 'v> {
    /// The resource a `Reference.reference` names, if this document holds it.
    pub fn resolve(&self, reference: &str) -> Option<&'a Resource<'v>> {
        let reference = reference.trim();
        if let Some(id) = reference.strip_prefix('#') {
            return self
                .contained
                .by_id
                .get(id)
                .and_then(|&i| self.contained.resources.get(i));
        }
        let bundle = self.bundle?;
        if let Some(&i) = bundle.by_full_url.get(reference) {
            return bundle.entries.get(i);
        }
        let (kind, id) = type_and_id(reference)?;
        bundle
            .by_type_id
            .get(&(kind, id))
            .and_then(|&i| bundle.entries.get(i))
    }
}

/// The `Type/id` a reference ends with (`Patient/1`, `http://h/fhir/Patient/1`,
/// `Patient/1/_history/2`), if it has one.
fn type_and_id(reference: &str) -> Option<(&str, &str)> {
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let mut segments: Vec<&str> = path.split('/').collect();
    if let Some(at) = segments.iter().position(|s| *s == "_history") {
        segments.truncate(at);
    }
    let id = segments.pop()?;
    let kind = segments.pop()?;
    let is_type = kind.starts_with(|c: char| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    (is_type && !id.is_empty()).then_some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_end_in_type_and_id() {
        assert_eq!(type_and_id("Patient/123"), Some(("Patient", "123")));
        assert_eq!(
            type_and_id("https://h.example/fhir/Patient/a-1/_history/3"),
            Some(("Patient", "a-1"))
        );
        assert_eq!(type_and_id("urn:uuid:1234"), None);
        assert_eq!(type_and_id("patient/1"), None);
        assert_eq!(type_and_id("Patient/"), None);
        assert_eq!(type_and_id(""), None);
    }
}
