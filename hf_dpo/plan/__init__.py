"""Peak-memory planning before anything is downloaded: architecture facts (`arch`) and the estimate
(`estimate`)."""
