//! corral adapter: crowdstrike (being written).
