"""vtdlud: Intel VT-d IOMMU live-update state auditor."""

__version__ = "0.1.0"
