//! Shared field normalizers (being filled in; see fields helper).
use serde::{Deserialize, Serialize};

/// A MAC address in one canonical form (`aa:bb:cc:dd:ee:ff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        let b = m.0;
        format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Err(s)
    }
}
