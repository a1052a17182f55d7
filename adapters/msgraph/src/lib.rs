//! corral adapter: msgraph (being written).
