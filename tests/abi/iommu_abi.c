/*
 * A C replica of include/linux/kho/abi/iommu.h (IOMMU live-update records), re-typed for
 * vtdlud's tests from reference/kernel-interfaces.md §1, so that gcc -- not vtdlud -- decides the
 * layout.  Build with -DIOMMU_ABI_VARIANT=1 (compatible "iommu-liveupdate-v1", Intel unions) or
 * -DIOMMU_ABI_VARIANT=2 ("iommu-liveupdate" + IOMMU_LUO_FLB_VERSION 1, generic structs only).
 *
 * The program prints, one per line:
 *   abi <pointer size> <little|big>
 *   sizeof <struct> <bytes> <alignment>
 *   field <struct> <member> <offsetof> <sizeof member>      (every member but bit-fields)
 *   flex <struct> <member> <offsetof> <sizeof element>      (flexible array members)
 *   record <name> <hex bytes>                               (populated records, see below)
 * tests/abi/test_abi_gcc.py compares all of it with vtdlud.model.abi.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef IOMMU_ABI_VARIANT
#error "define IOMMU_ABI_VARIANT as 1 or 2"
#endif

typedef uint8_t u8;
typedef uint32_t u32;
typedef uint64_t u64;
#define __packed __attribute__((__packed__))

struct iommu_domain; /* opaque: only a pointer to it is stored */

#define IOMMU_SER_FLAG_DELETED (1 << 0)
#define IOMMU_SER_FLAG_INCOMING (1 << 1)

#if IOMMU_ABI_VARIANT == 1
#define IOMMU_LUO_FLB_COMPATIBLE "iommu-liveupdate-v1"
enum iommu_type_ser { IOMMU_INVALID, IOMMU_INTEL };
#else
#define IOMMU_LUO_FLB_COMPATIBLE "iommu-liveupdate"
#define IOMMU_LUO_FLB_VERSION 1
enum iommu_type_ser { IOMMU_INVALID };
#endif

struct iommu_hdr_ser {
	u32 ref_count;
	u32 flags;
} __packed;

struct iommu_domain_ser {
	struct iommu_hdr_ser hdr;
	u64 top_table_phys;
	u64 top_level;
	u32 vasz;
	u32 sign_extend : 1;
	struct iommu_domain *restored_domain;
} __packed;

struct iommu_dev_map_ser {
	u64 attachment_id;
	u64 domain_phys;
	u64 iommu_phys;
} __packed;

#if IOMMU_ABI_VARIANT == 1
struct iommu_device_intel_ser {
	u64 pasid_table;
	u64 max_pasid;
} __packed;
#endif

struct iommu_device_ser {
	struct iommu_hdr_ser hdr;
	u32 devid;
	u32 pci_domain_nr;
	struct iommu_dev_map_ser domain_iommu_ser;
#if IOMMU_ABI_VARIANT == 1
	union {
		struct iommu_device_intel_ser intel;
	};
#endif
} __packed;

#if IOMMU_ABI_VARIANT == 1
/* deliberately not packed, as in the header */
struct iommu_intel_ser {
	u8 restored;
	u8 padding[7];
	u64 phys_addr;
	u64 root_table;
	u64 context_tables_bitmap[8];
};
#endif

struct iommu_hw_ser {
	struct iommu_hdr_ser hdr;
	u64 token;
	u64 type;
#if IOMMU_ABI_VARIANT == 1
	union {
		struct iommu_intel_ser intel;
	};
#endif
} __packed;

struct iommu_array_hdr_ser {
	u64 next_array_phys;
	u64 nr_objects;
} __packed;

struct iommu_hw_array_ser {
	struct iommu_array_hdr_ser hdr;
	struct iommu_hw_ser objects[];
} __packed;

struct iommu_domain_array_ser {
	struct iommu_array_hdr_ser hdr;
	struct iommu_domain_ser objects[];
} __packed;

struct iommu_device_array_ser {
	struct iommu_array_hdr_ser hdr;
	struct iommu_device_ser objects[];
} __packed;

struct iommu_flb_ser {
#if IOMMU_ABI_VARIANT == 2
	u64 version;
#endif
	u64 iommu_array_phys;
	u64 iommu_domain_array_phys;
	u64 device_array_phys;
} __packed;

/* ---- layout report ------------------------------------------------------------------------ */

#define SIZE(s) printf("sizeof %s %zu %zu\n", #s, sizeof(struct s), _Alignof(struct s))
#define FIELD(s, m) \
	printf("field %s %s %zu %zu\n", #s, #m, offsetof(struct s, m), sizeof(((struct s *)0)->m))
#define FLEX(s, m) \
	printf("flex %s %s %zu %zu\n", #s, #m, offsetof(struct s, m), sizeof(((struct s *)0)->m[0]))

static void report_layout(void)
{
	SIZE(iommu_hdr_ser);
	FIELD(iommu_hdr_ser, ref_count);
	FIELD(iommu_hdr_ser, flags);

	SIZE(iommu_domain_ser); /* sign_extend is a bit-field: checked through the records */
	FIELD(iommu_domain_ser, hdr);
	FIELD(iommu_domain_ser, top_table_phys);
	FIELD(iommu_domain_ser, top_level);
	FIELD(iommu_domain_ser, vasz);
	FIELD(iommu_domain_ser, restored_domain);

	SIZE(iommu_dev_map_ser);
	FIELD(iommu_dev_map_ser, attachment_id);
	FIELD(iommu_dev_map_ser, domain_phys);
	FIELD(iommu_dev_map_ser, iommu_phys);

	SIZE(iommu_device_ser);
	FIELD(iommu_device_ser, hdr);
	FIELD(iommu_device_ser, devid);
	FIELD(iommu_device_ser, pci_domain_nr);
	FIELD(iommu_device_ser, domain_iommu_ser);

	SIZE(iommu_hw_ser);
	FIELD(iommu_hw_ser, hdr);
	FIELD(iommu_hw_ser, token);
	FIELD(iommu_hw_ser, type);

#if IOMMU_ABI_VARIANT == 1
	SIZE(iommu_device_intel_ser);
	FIELD(iommu_device_intel_ser, pasid_table);
	FIELD(iommu_device_intel_ser, max_pasid);
	FIELD(iommu_device_ser, intel);

	SIZE(iommu_intel_ser);
	FIELD(iommu_intel_ser, restored);
	FIELD(iommu_intel_ser, padding);
	FIELD(iommu_intel_ser, phys_addr);
	FIELD(iommu_intel_ser, root_table);
	FIELD(iommu_intel_ser, context_tables_bitmap);
	FIELD(iommu_hw_ser, intel);
#endif

	SIZE(iommu_array_hdr_ser);
	FIELD(iommu_array_hdr_ser, next_array_phys);
	FIELD(iommu_array_hdr_ser, nr_objects);

	SIZE(iommu_hw_array_ser);
	FIELD(iommu_hw_array_ser, hdr);
	FLEX(iommu_hw_array_ser, objects);
	SIZE(iommu_domain_array_ser);
	FIELD(iommu_domain_array_ser, hdr);
	FLEX(iommu_domain_array_ser, objects);
	SIZE(iommu_device_array_ser);
	FIELD(iommu_device_array_ser, hdr);
	FLEX(iommu_device_array_ser, objects);

	SIZE(iommu_flb_ser);
#if IOMMU_ABI_VARIANT == 2
	FIELD(iommu_flb_ser, version);
#endif
	FIELD(iommu_flb_ser, iommu_array_phys);
	FIELD(iommu_flb_ser, iommu_domain_array_phys);
	FIELD(iommu_flb_ser, device_array_phys);
}

/* ---- populated records: every field a distinct value (the test holds the same values) ------ */

static void dump(const char *name, const void *p, size_t n)
{
	const unsigned char *b = p;

	printf("record %s ", name);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

static struct iommu_hdr_ser hdr(u32 ref_count, u32 flags)
{
	struct iommu_hdr_ser h = { .ref_count = ref_count, .flags = flags };
	return h;
}

static struct iommu_domain_ser domain(unsigned char fill, u32 base, u32 sign_extend)
{
	struct iommu_domain_ser d;

	/* the fill shows which bits are no field's: they must survive pack(unpack()) */
	memset(&d, fill, sizeof(d));
	d.hdr = hdr(base + 1, base + 2);
	d.top_table_phys = 0x0123456789abcde0ULL + base;
	d.top_level = 0x1112131415161700ULL + base;
	d.vasz = 0x21222300u + base;
	d.sign_extend = sign_extend;
	d.restored_domain = (struct iommu_domain *)(uintptr_t)(0xfedcba9876543200ULL + base);
	return d;
}

static struct iommu_dev_map_ser dev_map(u64 base)
{
	struct iommu_dev_map_ser m = {
		.attachment_id = 0x3132333435363700ULL + base,
		.domain_phys = 0x4142434445464700ULL + base,
		.iommu_phys = 0x5152535455565700ULL + base,
	};
	return m;
}

static struct iommu_device_ser device(u32 base)
{
	struct iommu_device_ser d;

	memset(&d, 0, sizeof(d));
	d.hdr = hdr(0x61626300u + base, 0x71727300u + base);
	d.devid = 0x8182u + base;
	d.pci_domain_nr = 0x91929300u + base;
	d.domain_iommu_ser = dev_map(base);
#if IOMMU_ABI_VARIANT == 1
	d.intel.pasid_table = 0xa1a2a3a4a5a6a700ULL + base;
	d.intel.max_pasid = 0xb1b2b3b4b5b6b700ULL + base;
#endif
	return d;
}

static struct iommu_hw_ser hw(u32 base)
{
	struct iommu_hw_ser h;

	memset(&h, 0, sizeof(h));
	h.hdr = hdr(0xc1c2c300u + base, 0xd1d2d300u + base);
	h.token = 0xe1e2e3e4e5e6e700ULL + base;
	h.type = 0xf1f2f3f4f5f6f700ULL + base;
#if IOMMU_ABI_VARIANT == 1
	h.intel.restored = 0x01;
	for (int i = 0; i < 7; i++)
		h.intel.padding[i] = (u8)(0x02 + i);
	h.intel.phys_addr = 0x0a0b0c0d0e0f1000ULL + base;
	h.intel.root_table = 0x1a1b1c1d1e1f2000ULL + base;
	for (int i = 0; i < 8; i++)
		h.intel.context_tables_bitmap[i] = 0x8000000000000001ULL * (u64)(i + 1) + base;
#endif
	return h;
}

static void report_records(void)
{
	union {
		unsigned char page[4096];
		struct iommu_domain_array_ser domains;
		struct iommu_device_array_ser devices;
		struct iommu_hw_array_ser hws;
	} page;
	struct iommu_array_hdr_ser ahdr = { .next_array_phys = 0x123456789abc000ULL, .nr_objects = 2 };
	struct iommu_hdr_ser h = hdr(0x04030201u, IOMMU_SER_FLAG_DELETED | IOMMU_SER_FLAG_INCOMING);
	struct iommu_domain_ser d0 = domain(0x00, 0x10, 1);
	struct iommu_domain_ser d1 = domain(0xff, 0x20, 0);
	struct iommu_dev_map_ser m = dev_map(0x30);
	struct iommu_device_ser dev = device(0x40);
	struct iommu_hw_ser hw0 = hw(0x50);
	struct iommu_flb_ser flb;

	dump("hdr", &h, sizeof(h));
	dump("domain", &d0, sizeof(d0));
	dump("domain_filled", &d1, sizeof(d1));
	dump("dev_map", &m, sizeof(m));
	dump("device", &dev, sizeof(dev));
	dump("hw", &hw0, sizeof(hw0));
	dump("array_hdr", &ahdr, sizeof(ahdr));

	memset(&flb, 0, sizeof(flb));
#if IOMMU_ABI_VARIANT == 2
	flb.version = IOMMU_LUO_FLB_VERSION;
#endif
	flb.iommu_array_phys = 0x100000000ULL;
	flb.iommu_domain_array_phys = 0x200001000ULL;
	flb.device_array_phys = 0x300002000ULL;
	dump("flb", &flb, sizeof(flb));

	/* pages: the header followed by two records, stride sizeof(record) */
	memset(&page, 0, sizeof(page));
	page.domains.hdr = ahdr;
	page.domains.objects[0] = d0;
	page.domains.objects[1] = d1;
	dump("domain_array", page.page, sizeof(page.domains) + 2 * sizeof(page.domains.objects[0]));

	memset(&page, 0, sizeof(page));
	page.devices.hdr = ahdr;
	page.devices.objects[0] = dev;
	page.devices.objects[1] = device(0x41);
	dump("device_array", page.page, sizeof(page.devices) + 2 * sizeof(page.devices.objects[0]));

	memset(&page, 0, sizeof(page));
	page.hws.hdr = ahdr;
	page.hws.objects[0] = hw0;
	page.hws.objects[1] = hw(0x51);
	dump("hw_array", page.page, sizeof(page.hws) + 2 * sizeof(page.hws.objects[0]));
}

int main(void)
{
	const u32 one = 1;

	printf("abi %zu %s\n", sizeof(void *), *(const unsigned char *)&one ? "little" : "big");
	printf("compatible %s\n", IOMMU_LUO_FLB_COMPATIBLE);
	report_layout();
	report_records();
	return 0;
}
