"""The IOMMU live-update ABI mirror, checked against gcc."""
