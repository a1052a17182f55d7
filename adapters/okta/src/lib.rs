//! corral adapter: okta (being written).
