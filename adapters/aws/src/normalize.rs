//! Decoding `DescribeInstances` answers into cloud resources and devices.
//! Runs on the normalize pool, never on the runtime.
//!
//! A page is one whole answer. It is read once with quick-xml's streaming
//! reader (events borrowed from the page, no document tree), an instance at
//! a time: the reservation's `ownerId` (the account), then each
//! `instancesSet/item`. Elements of the same name at other depths (an ENI's
//! own `privateIpAddress`, a tag's `item`) are told apart by their path. An
//! instance without an id, or a reservation without an owner, is a reject;
//! XML that breaks off or is malformed keeps the instances read before the
//! fault and marks the page failed (the instances after it are unknown), so
//! the stream is not stale-handled.

use corral_core::fields;
use corral_core::{Asset, CloudResource, CloudTag, Device, NormalizedPage, RawPage, Reject};
use quick_xml::Reader;
use quick_xml::events::Event;

use crate::{DEVICES, INSTANCES};

/// Where a page came from: written into its locator by fetch
/// (`... region REGION ...`), read back here.
pub fn region_of(locator: &str) -> Option<&str> {
    let mut words = locator.split_whitespace();
    while let Some(w) = words.next() {
        if w == "region" {
            return words.next();
        }
    }
    None
}

/// The facts of one instance.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Instance {
    pub id: Option<String>,
    pub owner: Option<String>,
    pub instance_type: Option<String>,
    pub state: Option<String>,
    pub private_dns: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub platform: Option<String>,
    pub launch_time: Option<String>,
    pub availability_zone: Option<String>,
    pub macs: Vec<String>,
    pub eni_ips: Vec<String>,
    pub tags: Vec<(String, String)>,
}

fn set(slot: &mut Option<String>, v: &str) {
    let v = v.trim();
    if !v.is_empty() {
        *slot = Some(v.to_string());
    }
}

/// Read every instance of an answer; `Err` carries the instances read
/// before a fault and what the fault was.
pub fn read_instances(xml: &[u8]) -> Result<Vec<Instance>, (Vec<Instance>, String)> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut owner: Option<String> = None;
    let mut cur: Option<Instance> = None;
    let mut text = String::new();
    let mut tag: (Option<String>, Option<String>) = (None, None);
    let mut root_closed = false;
    loop {
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = reader.error_position();
                return Err((out, format!("malformed XML at byte {at}: {e}")));
            }
        };
        match ev {
            Event::Start(e) => {
                path.push(e.name().as_ref().to_string());
                text.clear();
                if is_instance(&path) {
                    cur = Some(Instance { owner: owner.clone(), ..Instance::default() });
                }
            }
            Event::Empty(_) => {}
            Event::Text(t) => text.push_str(&t),
            Event::CData(t) => text.push_str(&t),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => match &*r {
                        "amp" => Some('&'),
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "quot" => Some('"'),
                        "apos" => Some('\''),
                        _ => None,
                    },
                    Err(e) => return Err((out, format!("malformed XML: {e}"))),
                };
                match c {
                    Some(c) => text.push(c),
                    None => return Err((out, "malformed XML: unknown entity".into())),
                }
            }
            Event::End(_) => {
                if path.len() == 1 {
                    root_closed = true;
                }
                if is_instance(&path) {
                    if let Some(i) = cur.take() {
                        out.push(i);
                    }
                } else if path.len() == 4 && path[1] == "reservationSet" && path[3] == "ownerId" {
                    owner = Some(text.trim().to_string()).filter(|s| !s.is_empty());
                } else if path.len() == 3 && path[1] == "reservationSet" {
                    owner = None;
                } else if let Some(i) = cur.as_mut()
                    && path.len() > 5
                {
                    leaf(i, &path[5..], &text, &mut tag);
                }
                path.pop();
                text.clear();
            }
            Event::Eof => {
                if !root_closed {
                    return Err((out, "the answer ends before its document does".into()));
                }
                return Ok(out);
            }
            _ => {}
        }
    }
}

/// `.../reservationSet/item/instancesSet/item`.
fn is_instance(path: &[String]) -> bool {
    path.len() == 5
        && path[1] == "reservationSet"
        && path[2] == "item"
        && path[3] == "instancesSet"
        && path[4] == "item"
}

/// An element of an instance closed: `rel` is its path below the instance's `item`.
fn leaf(i: &mut Instance, rel: &[String], text: &str, tag: &mut (Option<String>, Option<String>)) {
    let names: Vec<&str> = rel.iter().map(String::as_str).collect();
    match names.as_slice() {
        ["instanceId"] => set(&mut i.id, text),
        ["instanceType"] => set(&mut i.instance_type, text),
        ["instanceState", "name"] => set(&mut i.state, text),
        ["privateDnsName"] => set(&mut i.private_dns, text),
        ["privateIpAddress"] => set(&mut i.private_ip, text),
        ["ipAddress"] => set(&mut i.public_ip, text),
        ["vpcId"] => set(&mut i.vpc, text),
        ["subnetId"] => set(&mut i.subnet, text),
        ["platform"] => set(&mut i.platform, text),
        ["launchTime"] => set(&mut i.launch_time, text),
        ["placement", "availabilityZone"] => set(&mut i.availability_zone, text),
        ["networkInterfaceSet", "item", "macAddress"] if !text.trim().is_empty() => {
            i.macs.push(text.trim().to_string());
        }
        ["networkInterfaceSet", "item", "privateIpAddressesSet", "item", "privateIpAddress"]
            if !text.trim().is_empty() =>
        {
            i.eni_ips.push(text.trim().to_string());
        }
        ["tagSet", "item", "key"] => tag.0 = Some(text.to_string()),
        ["tagSet", "item", "value"] => tag.1 = Some(text.to_string()),
        ["tagSet", "item"] => {
            if let (Some(k), v) = (tag.0.take(), tag.1.take()) {
                i.tags.push((k, v.unwrap_or_default()));
            }
        }
        _ => {}
    }
}

/// The instance's ARN.
pub fn arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:instance/{id}")
}

/// Decode one page of either stream.
pub fn page(page: &RawPage) -> NormalizedPage {
    let devices = page.stream == DEVICES;
    if !devices && page.stream != INSTANCES {
        return NormalizedPage::page_failed(format!("unknown stream `{}`", page.stream));
    }
    let Some(region) = region_of(&page.locator) else {
        return NormalizedPage::page_failed(format!("no region in the page's locator `{}`", page.locator));
    };
    let (instances, fault) = match read_instances(&page.body) {
        Ok(v) => (v, None),
        Err((v, fault)) => (v, Some(fault)),
    };
    let mut out = NormalizedPage::default();
    for (n, i) in instances.iter().enumerate() {
        let which = || format!("instance {} of {}", n + 1, page.locator);
        let Some(id) = i.id.as_deref() else {
            out.rejects.push(Reject::new(which(), "missing_key", "no <instanceId>"));
            continue;
        };
        let Some(account) = i.owner.as_deref() else {
            out.rejects.push(Reject::new(
                format!("instance {id} ({})", which()),
                "missing_key",
                "its reservation has no <ownerId>",
            ));
            continue;
        };
        let arn = arn(region, account, id);
        out.assets.push(if devices {
            device(&page.stream, arn, region, account, id, i)
        } else {
            resource(&page.stream, arn, region, account, id, i)
        });
    }
    if let Some(fault) = fault {
        let after =
            instances.last().and_then(|i| i.id.clone()).map(|id| format!(" (after instance {id})")).unwrap_or_default();
        out.page_error = Some(format!("{fault}{after}: the instances after it are unknown"));
    }
    out
}

fn private_ips(i: &Instance) -> Vec<std::net::IpAddr> {
    fields::ips(i.private_ip.iter().chain(i.eni_ips.iter()).map(String::as_str))
}

fn resource(stream: &str, arn: String, region: &str, account: &str, id: &str, i: &Instance) -> Asset {
    let name = i.tags.iter().find(|(k, _)| k == "Name").and_then(|(_, v)| fields::text(v));
    let macs: Vec<String> = fields::macs(i.macs.iter().map(String::as_str)).iter().map(ToString::to_string).collect();
    let r = CloudResource {
        source_id: arn.clone(),
        provider: Some("aws".into()),
        account: Some(account.to_string()),
        region: Some(region.to_string()),
        resource_type: Some("ec2:instance".into()),
        resource_id: Some(id.to_string()),
        arn: Some(arn),
        name,
        state: i.state.as_deref().map(str::to_ascii_lowercase),
        tags: i.tags.iter().map(|(k, v)| CloudTag { key: k.clone(), value: v.clone() }).collect(),
        public_ips: fields::ips(i.public_ip.iter().map(String::as_str)),
        private_ips: private_ips(i),
        created: None,
    };
    Asset::cloud_resource(stream, r)
        .with_attr_opt("instance_type", i.instance_type.clone())
        .with_attr_opt("vpc_id", i.vpc.clone())
        .with_attr_opt("subnet_id", i.subnet.clone())
        .with_attr_opt("availability_zone", i.availability_zone.clone())
        .with_attr_opt("platform", i.platform.clone())
        .with_attr_opt("private_dns_name", i.private_dns.clone())
        .with_attr_opt("mac_addresses", (!macs.is_empty()).then_some(macs))
        .with_attr_opt("launch_time", i.launch_time.as_deref().and_then(fields::timestamp))
}

fn device(stream: &str, arn: String, region: &str, account: &str, id: &str, i: &Instance) -> Asset {
    let name = fields::hostname_with_domain(i.private_dns.as_deref().unwrap_or(""), None);
    let mut ips = private_ips(i);
    for ip in fields::ips(i.public_ip.iter().map(String::as_str)) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let os = match i.platform.as_deref() {
        Some(p) if p.eq_ignore_ascii_case("windows") => fields::os(Some("Windows"), None),
        _ => Default::default(),
    };
    let tags: Vec<String> = i.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let d = Device {
        source_id: arn,
        hostname: name.hostname,
        domain: name.domain,
        ip_addresses: ips,
        mac_addresses: fields::macs(i.macs.iter().map(String::as_str)),
        os,
        cloud_instance_id: Some(id.to_string()),
        tags: fields::tags(tags.iter().map(String::as_str)),
        ..Default::default()
    };
    Asset::device(stream, d)
        .with_attr_opt("state", i.state.clone())
        .with_attr_opt("instance_type", i.instance_type.clone())
        .with_attr("region", region)
        .with_attr("account", account)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use corral_core::AssetBody;

    const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1</reservationId>
      <ownerId>111122223333</ownerId>
      <groupSet/>
      <instancesSet>
        <item>
          <instanceId>i-0aaaaaaaaaaaaaaaa</instanceId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <privateDnsName>ip-10-0-0-5.eu-west-1.compute.internal</privateDnsName>
          <instanceType>m5.large</instanceType>
          <launchTime>2025-05-01T10:00:00.000Z</launchTime>
          <placement><availabilityZone>eu-west-1b</availabilityZone></placement>
          <platform>windows</platform>
          <subnetId>subnet-1</subnetId>
          <vpcId>vpc-1</vpcId>
          <privateIpAddress>10.0.0.5</privateIpAddress>
          <ipAddress>54.1.2.3</ipAddress>
          <networkInterfaceSet>
            <item>
              <macAddress>0a:1b:2c:3d:4e:5f</macAddress>
              <privateIpAddress>10.0.0.5</privateIpAddress>
              <privateIpAddressesSet>
                <item><privateIpAddress>10.0.0.5</privateIpAddress><primary>true</primary></item>
                <item><privateIpAddress>10.0.0.6</privateIpAddress><primary>false</primary></item>
              </privateIpAddressesSet>
            </item>
          </networkInterfaceSet>
          <tagSet>
            <item><key>Name</key><value>web &amp; api</value></item>
            <item><key>team</key><value>web &lt;edge&gt;</value></item>
          </tagSet>
        </item>
        <item>
          <instanceState><code>48</code><name>terminated</name></instanceState>
          <privateDnsName/>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
  <nextToken>abc</nextToken>
</DescribeInstancesResponse>
"#;

    fn raw(stream: &str, xml: &str) -> RawPage {
        RawPage::new(stream, Bytes::from(xml.to_string()), format!("{stream} region eu-west-1 page 1"))
    }

    #[test]
    fn an_instance_becomes_a_cloud_resource() {
        let out = page(&raw(INSTANCES, ANSWER));
        assert!(out.page_error.is_none(), "{:?}", out.page_error);
        assert_eq!(out.rejects.len(), 1, "the instance without an id");
        let Some(AssetBody::CloudResource(r)) = out.assets.first().map(|a| &a.body) else { panic!("{:?}", out.assets) };
        assert_eq!(r.source_id, "arn:aws:ec2:eu-west-1:111122223333:instance/i-0aaaaaaaaaaaaaaaa");
        assert_eq!((r.account.as_deref(), r.region.as_deref()), (Some("111122223333"), Some("eu-west-1")));
        assert_eq!(r.name.as_deref(), Some("web & api"));
        assert_eq!(r.state.as_deref(), Some("running"));
        assert_eq!(r.tags[1], CloudTag { key: "team".into(), value: "web <edge>".into() });
        assert_eq!(r.private_ips.len(), 2, "{:?}", r.private_ips);
        assert_eq!(r.public_ips.len(), 1);
        let a = &out.assets[0].attributes;
        for k in
            ["instance_type", "vpc_id", "subnet_id", "platform", "mac_addresses", "launch_time", "availability_zone"]
        {
            assert!(a.contains_key(k), "{k}");
        }
    }

    #[test]
    fn the_same_instance_as_a_device_shares_its_keys() {
        let out = page(&raw(DEVICES, ANSWER));
        let Some(AssetBody::Device(d)) = out.assets.first().map(|a| &a.body) else { panic!("{:?}", out.assets) };
        assert_eq!(d.hostname.as_deref(), Some("ip-10-0-0-5"));
        assert_eq!(d.domain.as_deref(), Some("eu-west-1.compute.internal"));
        assert_eq!(d.cloud_instance_id.as_deref(), Some("i-0aaaaaaaaaaaaaaaa"));
        assert_eq!(d.mac_addresses.len(), 1);
        assert_eq!(d.ip_addresses.len(), 3);
        assert_eq!(d.os.family.as_deref(), Some("windows"));
        let keys = out.assets[0].correlation_keys();
        assert!(
            keys.iter().any(|(k, v)| format!("{k:?}") == "CloudId" && v.contains("i-0aaaaaaaaaaaaaaaa")),
            "{keys:?}"
        );
    }

    #[test]
    fn a_malformed_answer_keeps_what_came_before_and_fails_the_page() {
        let broken = ANSWER.replacen("</instanceType>", "</instanceTypo>", 1);
        let out = page(&raw(INSTANCES, &broken));
        assert!(out.page_error.is_some());
        assert!(out.assets.is_empty());
        let cut = &ANSWER[..ANSWER.find("<item>\n          <instanceState><code>48").unwrap_or(10)];
        let out = page(&raw(INSTANCES, cut));
        assert_eq!(out.assets.len(), 1);
        assert!(out.page_error.as_deref().is_some_and(|e| e.contains("i-0aaaaaaaaaaaaaaaa")), "{:?}", out.page_error);
        assert!(page(&RawPage::new(INSTANCES, Bytes::new(), "no region")).page_error.is_some());
    }
}
