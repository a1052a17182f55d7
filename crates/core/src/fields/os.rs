//! Operating system family detection.

use crate::asset::Os;

use super::text;

/// One of the families [`Os::family`] documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Windows,
    MacOs,
    Linux,
    Ios,
    Android,
    ChromeOs,
    Unix,
    Other,
}

impl Family {
    fn as_str(self) -> &'static str {
        match self {
            Family::Windows => "windows",
            Family::MacOs => "macos",
            Family::Linux => "linux",
            Family::Ios => "ios",
            Family::Android => "android",
            Family::ChromeOs => "chromeos",
            Family::Unix => "unix",
            Family::Other => "other",
        }
    }
}

/// Single-word markers, matched against whole lowercase alphanumeric tokens.
const LINUX_WORDS: &[&str] = &[
    "linux",
    "ubuntu",
    "debian",
    "rhel",
    "redhat",
    "centos",
    "fedora",
    "amzn",
    "suse",
    "sles",
    "sled",
    "opensuse",
    "rocky",
    "almalinux",
    "alma",
    "alpine",
    "arch",
    "archlinux",
    "gentoo",
    "mint",
    "kali",
    "raspbian",
    "coreos",
    "flatcar",
    "photon",
    "manjaro",
    "slackware",
    "mageia",
    "bottlerocket",
    "scientific",
    "elementary",
    "nixos",
    "clearos",
    "cloudlinux",
];
const UNIX_WORDS: &[&str] = &[
    "aix",
    "solaris",
    "sunos",
    "freebsd",
    "openbsd",
    "netbsd",
    "dragonfly",
    "hpux",
    "illumos",
    "openindiana",
    "smartos",
    "unix",
    "tru64",
    "irix",
    "sco",
    "unixware",
    "truenas",
    "pfsense",
    "opnsense",
];

fn is_windows_word(w: &str) -> bool {
    // Windows, Windows10, WindowsServer ...
    if w == "win" || w.starts_with("windows") {
        return true;
    }
    // Win10, win11, win7, win2019, winxp, win2k, win32, win64.
    match w.strip_prefix("win") {
        Some(rest) => {
            !rest.is_empty()
                && (rest.bytes().all(|b| b.is_ascii_digit())
                    || matches!(rest, "xp" | "2k" | "2k3" | "2k8" | "nt" | "vista" | "me"))
        }
        None => false,
    }
}

fn classify(name: &str) -> Family {
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let has = |w: &str| words.contains(&w);
    let has_pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
    let starts = |p: &str| words.iter().any(|w| w.starts_with(p));

    // Network gear running "IOS" is not an iPhone.
    if has("cisco") || has("junos") || has("fortios") || has("panos") {
        return Family::Other;
    }
    if has("chromeos") || has_pair("chrome", "os") || has_pair("chromium", "os") || has("chromebook") || has("cros") {
        return Family::ChromeOs;
    }
    // AndroidForWork, AndroidEnterprise, Android (Linux kernel) ...
    if starts("android") {
        return Family::Android;
    }
    if has("ios") || has("ipados") || has("iphone") || has("ipad") || has("ipod") || has("iphoneos") {
        return Family::Ios;
    }
    if has("macos")
        || has("osx")
        || has("darwin")
        || has("macintosh")
        || has("mac")
        || has_pair("os", "x")
        || has_pair("mac", "os")
        || starts("macos")
    {
        return Family::MacOs;
    }
    if words.iter().any(|w| is_windows_word(w)) {
        return Family::Windows;
    }
    if words.iter().any(|w| LINUX_WORDS.contains(w))
        || has_pair("red", "hat")
        || has_pair("oracle", "linux")
        || starts("linux")
        || starts("ubuntu")
        || starts("rhel")
        || starts("centos")
        || starts("amazonlinux")
        || starts("amzn")
        || starts("debian")
    {
        return Family::Linux;
    }
    if words.iter().any(|w| UNIX_WORDS.contains(w))
        || (has("hp") && has("ux"))
        || starts("solaris")
        || starts("freebsd")
    {
        return Family::Unix;
    }
    Family::Other
}

/// Operating system facts from a vendor's OS name and version.
///
/// `name` and `version` are cleaned with [`text`]. The family is derived
/// from the name, then the version (CrowdStrike puts `Windows 11` in
/// `os_version`): `windows` (`Windows 11`, `Windows Server 2019`, `Win10`),
/// `macos` (`Mac OS X`, `macOS`, `Darwin`), `linux` (Ubuntu, Debian, RHEL,
/// CentOS, Amazon Linux, SUSE, `Linux`, ...), `ios` (iOS, iPadOS),
/// `android`, `chromeos`, `unix` (AIX, Solaris, FreeBSD, ...), else `other`.
/// With neither a name nor a version the result is empty (family `None`).
pub fn os(name: Option<&str>, version: Option<&str>) -> Os {
    let name = name.and_then(text);
    let version = version.and_then(text);
    let family = match (name.as_deref(), version.as_deref()) {
        (None, None) => None,
        (n, v) => {
            let by_name = n.map_or(Family::Other, classify);
            let fam = match (by_name, v) {
                (Family::Other, Some(v)) => classify(v),
                (f, _) => f,
            };
            Some(fam.as_str().to_owned())
        }
    };
    Os { family, name, version }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(name: Option<&str>, version: Option<&str>) -> Option<String> {
        os(name, version).family
    }

    #[test]
    fn os_family_table() {
        let long = format!("{} Windows", "x".repeat(100_000));
        let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            // Windows.
            (Some("Windows"), Some("10.0.19045"), Some("windows")),
            (Some("Windows 11"), None, Some("windows")),
            (Some("Windows 10 Pro"), Some("22H2"), Some("windows")),
            (Some("Windows Server 2019"), None, Some("windows")),
            (Some("Windows Server 2022 Datacenter"), None, Some("windows")),
            (Some("Microsoft Windows Server 2019 Standard"), None, Some("windows")),
            (Some("Microsoft Windows 10 Enterprise 64 bit Edition Version 21H2"), None, Some("windows")),
            (Some("Win10"), None, Some("windows")),
            (Some("win11"), None, Some("windows")),
            (Some("WinXP"), None, Some("windows")),
            (Some("Win2019"), None, Some("windows")),
            (Some("WINDOWS"), None, Some("windows")),
            (Some("Windows10"), None, Some("windows")),
            (Some("WindowsServer2022"), None, Some("windows")),
            (Some("windows"), Some("10.0.22631.2861"), Some("windows")),
            (Some("Windows 2016 Server Standard"), None, Some("windows")),
            // CrowdStrike: platform_name + os_version.
            (None, Some("Windows 11"), Some("windows")),
            (Some("unknown"), Some("Windows Server 2019"), Some("windows")),
            // macOS.
            (Some("macOS"), Some("14.2.1"), Some("macos")),
            (Some("Mac OS X"), Some("10.15.7"), Some("macos")),
            (Some("Mac"), None, Some("macos")),
            (Some("MacOS Sonoma (14.2)"), None, Some("macos")),
            (Some("macOS Ventura"), None, Some("macos")),
            (Some("OS X El Capitan"), None, Some("macos")),
            (Some("OSX"), None, Some("macos")),
            (Some("Darwin"), Some("23.2.0"), Some("macos")),
            (Some("darwin"), None, Some("macos")),
            // Linux.
            (Some("Linux"), None, Some("linux")),
            (Some("Ubuntu 22.04.3 LTS"), None, Some("linux")),
            (Some("ubuntu"), None, Some("linux")),
            (Some("Debian GNU/Linux 12 (bookworm)"), None, Some("linux")),
            (Some("Debian 11"), None, Some("linux")),
            (Some("RHEL 8.9"), None, Some("linux")),
            (Some("Red Hat Enterprise Linux Server 7.9"), None, Some("linux")),
            (Some("RedHat"), None, Some("linux")),
            (Some("CentOS Linux 7 (Core)"), None, Some("linux")),
            (Some("CentOS"), None, Some("linux")),
            (Some("Amazon Linux 2"), None, Some("linux")),
            (Some("Amazon Linux 2023"), None, Some("linux")),
            (Some("amzn2"), None, Some("linux")),
            (Some("SUSE Linux Enterprise Server 15 SP5"), None, Some("linux")),
            (Some("SLES"), Some("15.5"), Some("linux")),
            (Some("openSUSE Leap 15.5"), None, Some("linux")),
            (Some("Rocky Linux 9.3"), None, Some("linux")),
            (Some("Fedora 39"), None, Some("linux")),
            (Some("Oracle Linux Server 8.8"), None, Some("linux")),
            (Some("Alpine"), None, Some("linux")),
            (Some("Linux 2.6"), None, Some("linux")),
            (Some("linux"), Some("5.15.0-91-generic"), Some("linux")),
            // iOS / iPadOS.
            (Some("iOS"), Some("17.2"), Some("ios")),
            (Some("iPadOS"), Some("17.2"), Some("ios")),
            (Some("iPhone"), None, Some("ios")),
            (Some("IOS"), None, Some("ios")),
            // Android.
            (Some("Android"), Some("14"), Some("android")),
            (Some("AndroidForWork"), Some("13"), Some("android")),
            (Some("AndroidEnterprise"), None, Some("android")),
            (Some("Android (Linux)"), None, Some("android")),
            // ChromeOS.
            (Some("ChromeOS"), Some("120.0"), Some("chromeos")),
            (Some("Chrome OS"), None, Some("chromeos")),
            (Some("Chromium OS (Linux)"), None, Some("chromeos")),
            // Unix.
            (Some("AIX"), Some("7.2"), Some("unix")),
            (Some("AIX 7.3"), None, Some("unix")),
            (Some("Solaris 11"), None, Some("unix")),
            (Some("Oracle Solaris 11.4"), None, Some("unix")),
            (Some("SunOS 5.11"), None, Some("unix")),
            (Some("FreeBSD 13.2-RELEASE"), None, Some("unix")),
            (Some("OpenBSD"), None, Some("unix")),
            (Some("HP-UX B.11.31"), None, Some("unix")),
            // Other.
            (Some("Cisco IOS XE"), Some("17.9"), Some("other")),
            (Some("Cisco IOS 15.2"), None, Some("other")),
            (Some("VMware ESXi 8.0"), None, Some("other")),
            (Some("Windows Phone"), None, Some("windows")),
            (Some("PlayStation"), None, Some("other")),
            (Some("Twin Peaks OS"), None, Some("other")),
            (Some("Darwinism"), None, Some("other")),
            (Some("Winter"), None, Some("other")),
            (None, Some("10.0.19045"), Some("other")),
            (Some("   "), Some("14.2"), Some("other")),
            (Some("日本語OS"), None, Some("other")),
            (Some("🚀"), None, Some("other")),
            (Some(&long), None, Some("windows")),
            // Empty.
            (None, None, None),
            (Some(""), Some(""), None),
            (Some("null"), Some("N/A"), None),
            (Some("  "), None, None),
        ];
        for (name, version, want) in cases {
            assert_eq!(fam(*name, *version).as_deref(), *want, "os({name:?}, {version:?})");
        }
    }

    #[test]
    fn os_keeps_trimmed_name_and_version() {
        assert_eq!(
            os(Some("  Windows 11 Pro  "), Some(" 10.0.22631 ")),
            Os {
                family: Some("windows".into()),
                name: Some("Windows 11 Pro".into()),
                version: Some("10.0.22631".into())
            }
        );
        assert_eq!(
            os(Some("null"), Some("Ubuntu 22.04")),
            Os { family: Some("linux".into()), name: None, version: Some("Ubuntu 22.04".into()) }
        );
        assert!(os(None, None).is_empty());
        assert!(os(Some("unknown"), Some("-")).is_empty());
    }
}
