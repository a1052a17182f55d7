//! Attributes must be declared by their stream, with their type: the engine
//! rejects a record that breaks its stream's declaration, naming the
//! attribute, and stores the rest of the page.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use corral_core::testing::{MemoryStore, sync_once};
use corral_core::{
    Adapter, AdapterInfo, Asset, AssetKind, AttrType, CheckOutcome, Device, FetchContext, FetchError, NormalizedPage,
    RawPage, RunStatus, Store, StreamInfo,
};

struct Attributed {
    info: AdapterInfo,
}

#[async_trait]
impl Adapter for Attributed {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }
    async fn check(&self) -> CheckOutcome {
        CheckOutcome::Ok { detail: String::new() }
    }
    async fn fetch(&self, ctx: FetchContext) -> Result<(), FetchError> {
        ctx.sink.send(RawPage::new("hosts", Bytes::from_static(b"-"), "page 1")).await
    }
    fn normalize(&self, page: &RawPage) -> NormalizedPage {
        let d = |id: &str| Asset::device(&page.stream, Device { source_id: id.into(), ..Default::default() });
        NormalizedPage {
            assets: vec![
                d("ok").with_attr("agent_version", "7.1").with_attr("cores", 8_i64),
                d("plain"),
                d("undeclared").with_attr("colour", "red"),
                d("mistyped").with_attr("cores", "eight"),
                d("not-finite").with_attr("load", f64::NAN),
            ],
            ..Default::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_or_mistyped_attributes_reject_their_record() {
    let stream = StreamInfo::new("hosts", AssetKind::Device, "id", "")
        .attribute("agent_version", AttrType::String, "")
        .attribute("cores", AttrType::Integer, "")
        .attribute("load", AttrType::Float, "");
    let info = AdapterInfo {
        name: "attributed".into(),
        version: "0".into(),
        description: String::new(),
        streams: vec![stream],
        config: vec![],
        notes: Default::default(),
    };
    let store = Arc::new(MemoryStore::new());
    let s = sync_once(&store, "c", Arc::new(Attributed { info })).await;
    assert_eq!(s.status, RunStatus::Partial, "{:?}", s.errors);
    assert_eq!((s.inserted, s.records_rejected), (2, 3));
    let mut stored: Vec<String> = store.all_assets().into_iter().map(|a| a.source_id).collect();
    stored.sort();
    assert_eq!(stored, ["ok", "plain"]);
    let rejects = store.rejects(&s.sync_id, 10).await.expect("rejects");
    let got: Vec<(&str, &str)> = rejects.iter().map(|r| (r.reject.reason.as_str(), r.reject.record.as_str())).collect();
    assert_eq!(
        got,
        [
            ("undeclared_attribute", "device undeclared of page 1"),
            ("attribute_type", "device mistyped of page 1"),
            ("attribute_type", "device not-finite of page 1"),
        ]
    );
    assert!(rejects[0].reject.detail.contains("`colour`"), "{}", rejects[0].reject.detail);
    assert!(rejects[1].reject.detail.contains("`cores` is declared integer"), "{}", rejects[1].reject.detail);
    let ok = store.all_assets().into_iter().find(|a| a.source_id == "ok").expect("ok");
    assert_eq!(ok.fields["attributes"]["cores"], 8);
}
