//! MongoDB store (issue 4).
