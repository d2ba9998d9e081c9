meta:
  id: qcow2
  title: QEMU copy-on-write disk image, format versions 2 and 3
  file-extension: qcow2
  license: MIT
  endian: be
  bit-endian: be
doc: |
  The on-disk structures of QEMU's qcow2 image format, as defined by QEMU's
  docs/interop/qcow2.rst (see also docs/format/README.md of this project).

  Conventions of this description, so that every parser generated from it is exact:
  * Every 64-bit quantity is split into 32-bit halves: plain integers use the `u64` type
    (`hi`, `lo`), bit-packed entries use bit fields of at most 32 bits. Kaitai's JavaScript
    target reads `u8` into a double and evaluates `&`/`>>` on 32 bits, so a single 64-bit
    field would lose bits above 2^53. The `num` instance of `u64` is a double and is only
    used for file positions (a position at or above 2^53 is beyond the end of every file).
  * `valid:` holds the must-reject rules that belong to one structure. Rules that relate
    several structures (overlaps, refcounts, limits against the file size) live in the
    validation layer above the generated code, which reports them with QEMU's messages.
  * Enums named `*_bit` list bit numbers (the feature bits); the generator also emits their masks.
  * Structures reached through a pointer (L1 and L2 tables, refcount blocks, the snapshot
    table, the bitmap directory) are `instances` with `pos`, read on first access.
seq:
  - id: header
    type: header
    doc: The image header at offset 0 (72 bytes for version 2, header_length bytes for version 3).
  - id: header_extensions
    size: extensions_end - header.len_header
    type: header_extension_area
    doc: Header extensions, from the end of the header to the backing file name or the end of cluster 0.
instances:
  extensions_end:
    value: 'header.backing_file_offset.num != 0 ? header.backing_file_offset.num : header.cluster_size'
    doc: Where header extensions must end - the backing file name if there is one, else the end of cluster 0.
  backing_file_name:
    pos: header.backing_file_offset.num
    size: header.backing_file_size
    type: str
    encoding: ASCII
    if: header.backing_file_offset.num != 0
    doc: Name of the backing file (not NUL-terminated), present when backing_file_offset is non-zero.
  l1_table:
    pos: header.l1_table_offset.num
    type: l1_entry(header.cluster_bits, header.has_extended_l2)
    repeat: expr
    repeat-expr: header.l1_size
    doc: The active L1 table, l1_size 8-byte entries at l1_table_offset.
  refcount_table:
    pos: header.refcount_table_offset.num
    size: header.refcount_table_clusters * header.cluster_size
    type: refcount_table(header.cluster_bits, header.refcount_order_effective)
    doc: The refcount table, refcount_table_clusters clusters at refcount_table_offset.
  snapshots:
    pos: header.snapshots_offset.num
    type: snapshot_entry(header.cluster_bits, header.has_extended_l2, _index + 1 == header.nb_snapshots)
    repeat: expr
    repeat-expr: header.nb_snapshots
    doc: The snapshot table, nb_snapshots variable-length entries at snapshots_offset.
types:
  u64:
    doc: A 64-bit big-endian unsigned integer kept as two exact 32-bit halves.
    seq:
      - id: hi
        type: u4
        doc: Bits 32..63.
      - id: lo
        type: u4
        doc: Bits 0..31.
    instances:
      num:
        value: hi * 4294967296 + lo
        doc: The value as a double - exact below 2^53; used only for file positions and sizes.

  header:
    doc: The qcow2 header (version 2 ends after snapshots_offset; version 3 adds feature bits and more).
    seq:
      - id: magic
        contents: [0x51, 0x46, 0x49, 0xfb]
        doc: The magic "QFI\xfb".
      - id: version
        type: u4
        valid:
          any-of: [2, 3]
        doc: Format version, 2 or 3.
      - id: backing_file_offset
        type: u64
        doc: File offset of the backing file name, or 0 when there is no backing file.
      - id: backing_file_size
        type: u4
        doc: Length of the backing file name in bytes (QEMU refuses more than 1023).
      - id: cluster_bits
        type: u4
        valid:
          min: 9
          max: 21
        doc: log2 of the cluster size; QEMU supports 9 (512 bytes) to 21 (2 MiB).
      - id: size
        type: u64
        doc: Virtual disk size in bytes.
      - id: crypt_method
        type: u4
        enum: crypt_method
        valid:
          any-of:
            - crypt_method::none
            - crypt_method::aes
            - crypt_method::luks
        doc: Encryption method, 0 none, 1 AES-CBC (legacy), 2 LUKS.
      - id: l1_size
        type: u4
        doc: Number of entries in the active L1 table.
      - id: l1_table_offset
        type: u64
        doc: File offset of the active L1 table (cluster aligned).
      - id: refcount_table_offset
        type: u64
        doc: File offset of the refcount table (cluster aligned).
      - id: refcount_table_clusters
        type: u4
        doc: Size of the refcount table in clusters.
      - id: nb_snapshots
        type: u4
        doc: Number of internal snapshots.
      - id: snapshots_offset
        type: u64
        doc: File offset of the snapshot table (cluster aligned).
      - id: incompatible_features
        type: u64
        if: version >= 3
        doc: Incompatible feature bits; a reader must refuse an image with a bit it does not know.
      - id: compatible_features
        type: u64
        if: version >= 3
        doc: Compatible feature bits; unknown ones may be ignored.
      - id: autoclear_features
        type: u64
        if: version >= 3
        doc: Auto-clear feature bits; a writer that does not know a bit must clear it.
      - id: refcount_order
        type: u4
        if: version >= 3
        valid:
          max: 6
        doc: log2 of the refcount width in bits (0..6, i.e. 1..64 bits); version 2 implies 4.
      - id: header_length
        type: u4
        if: version >= 3
        valid:
          min: 104
          max: cluster_size
        doc: Length of the header in bytes, at least 104 and at most one cluster.
      - id: compression_type
        type: u1
        enum: compression_type
        if: version >= 3 and header_length > 104
        valid:
          any-of:
            - compression_type::zlib
            - compression_type::zstd
        doc: Compression type of compressed clusters (an additional field, present when header_length > 104).
      - id: padding
        size: '(header_length < 112 ? header_length : 112) - 105'
        if: version >= 3 and header_length > 105
        doc: Padding after compression_type up to byte 112 (zero when written by QEMU).
      - id: unknown_header_fields
        size: header_length - 112
        if: version >= 3 and header_length > 112
        doc: Header bytes past 112 this description does not know; preserved verbatim on rewrite.
    instances:
      len_header:
        value: 'version >= 3 ? header_length : 72'
        doc: Header length in bytes (72 for version 2).
      cluster_size:
        value: 1 << cluster_bits
        doc: Cluster size in bytes.
      refcount_order_effective:
        value: 'version >= 3 ? refcount_order : 4'
        doc: refcount_order, with version 2's implied 4 (16-bit refcounts).
      compression_type_effective:
        value: 'version >= 3 and header_length > 104 ? compression_type.to_i : 0'
        doc: The compression type in use, 0 (zlib) when the field is absent.
      is_dirty:
        value: 'version >= 3 ? (incompatible_features.lo & (1 << incompatible_feature_bit::dirty.to_i)) != 0 : false'
        doc: Incompatible bit 0 - refcounts may be inconsistent (lazy refcounts).
      is_corrupt:
        value: 'version >= 3 ? (incompatible_features.lo & (1 << incompatible_feature_bit::corrupt.to_i)) != 0 : false'
        doc: Incompatible bit 1 - metadata may be corrupt; write only to repair.
      has_external_data_file:
        value: 'version >= 3 ? (incompatible_features.lo & (1 << incompatible_feature_bit::external_data_file.to_i)) != 0 : false'
        doc: Incompatible bit 2 - guest data lives in an external data file.
      has_compression_type:
        value: 'version >= 3 ? (incompatible_features.lo & (1 << incompatible_feature_bit::compression_type.to_i)) != 0 : false'
        doc: Incompatible bit 3 - the compression_type field is non-zero.
      has_extended_l2:
        value: 'version >= 3 ? (incompatible_features.lo & (1 << incompatible_feature_bit::extended_l2.to_i)) != 0 : false'
        doc: Incompatible bit 4 - L2 entries are 128 bits with subcluster bitmaps.
      has_lazy_refcounts:
        value: 'version >= 3 ? (compatible_features.lo & (1 << compatible_feature_bit::lazy_refcounts.to_i)) != 0 : false'
        doc: Compatible bit 0 - refcount updates may be postponed.
      has_bitmaps:
        value: 'version >= 3 ? (autoclear_features.lo & (1 << autoclear_feature_bit::bitmaps.to_i)) != 0 : false'
        doc: Autoclear bit 0 - the bitmaps extension is consistent.
      has_raw_external_data:
        value: 'version >= 3 ? (autoclear_features.lo & (1 << autoclear_feature_bit::raw_external_data.to_i)) != 0 : false'
        doc: Autoclear bit 1 - the external data file is a valid standalone raw image.

  header_extension_area:
    doc: The list of header extensions, ended by an end-of-extensions entry or by the end of the area.
    seq:
      - id: extensions
        type: header_extension
        if: not _io.eof
        repeat: until
        repeat-until: _.type == header_extension_type::end or _io.eof
        doc: The extensions in file order; the last one is normally the end marker.
      - id: trailing
        size-eos: true
        doc: Bytes after the end marker up to the end of the area (zero when written by QEMU).

  header_extension:
    doc: One header extension - type, length, data, padding to a multiple of 8 bytes.
    seq:
      - id: type
        type: u4
        enum: header_extension_type
        doc: Extension type; unknown types are kept as raw bytes.
      - id: len_data
        type: u4
        doc: Length of the data in bytes, without padding.
      - id: data
        size: len_data
        type:
          switch-on: type
          cases:
            'header_extension_type::backing_file_format': backing_file_format
            'header_extension_type::feature_name_table': feature_name_table
            'header_extension_type::bitmaps': bitmaps_extension
            'header_extension_type::full_disk_encryption': full_disk_encryption_pointer
            'header_extension_type::external_data_file': external_data_file_name
        doc: The extension data, decoded for the known types and raw bytes otherwise.
      - id: padding
        size: (8 - len_data % 8) % 8
        doc: Padding of the data to a multiple of 8 bytes.

  backing_file_format:
    doc: Backing file format name extension (e.g. "qcow2" or "raw").
    seq:
      - id: name
        size-eos: true
        type: str
        encoding: ASCII
        doc: The format name, not NUL-terminated (QEMU refuses 16 bytes or more).

  external_data_file_name:
    doc: External data file name extension.
    seq:
      - id: name
        size-eos: true
        type: str
        encoding: ASCII
        doc: The data file name, not NUL-terminated.

  feature_name_table:
    doc: Feature name table extension - human-readable names of feature bits.
    seq:
      - id: entries
        type: feature_name_entry
        repeat: eos
        doc: The 48-byte entries.

  feature_name_entry:
    doc: One feature name table entry.
    seq:
      - id: feature_type
        type: u1
        enum: feature_type
        doc: Which feature field the bit is in - 0 incompatible, 1 compatible, 2 autoclear.
      - id: bit
        type: u1
        doc: Bit number within that field (0..63).
      - id: name
        size: 46
        type: str
        encoding: ASCII
        pad-right: 0
        doc: Feature name, NUL-padded (not terminated when it is 46 characters long).

  bitmaps_extension:
    doc: Bitmaps extension - where the persistent dirty bitmap directory is.
    seq:
      - id: nb_bitmaps
        type: u4
        doc: Number of bitmaps in the directory (at least 1).
      - id: reserved
        type: u4
        valid: 0
        doc: Reserved, must be zero.
      - id: bitmap_directory_size
        type: u64
        doc: Size of the bitmap directory in bytes.
      - id: bitmap_directory_offset
        type: u64
        doc: File offset of the bitmap directory (cluster aligned).
    instances:
      bitmap_directory:
        io: _root._io
        pos: bitmap_directory_offset.num
        size: bitmap_directory_size.num
        type: bitmap_directory
        doc: The bitmap directory.

  full_disk_encryption_pointer:
    doc: Full disk encryption header pointer extension (LUKS header location).
    seq:
      - id: offset
        type: u64
        doc: File offset of the encryption header (cluster aligned).
      - id: length
        type: u64
        doc: Length of the encryption header and key material in bytes.

  l1_entry:
    doc: An L1 table entry - the offset of one L2 table.
    params:
      - id: cluster_bits
        type: u1
        doc: log2 of the cluster size, for the size of the L2 table.
      - id: extended_l2
        type: bool
        doc: Whether L2 entries are extended (128-bit).
    seq:
      - id: copied
        type: b1
        doc: Bit 63 - the L2 table has refcount exactly 1 (meaningful in the active L1 only).
      - id: reserved_hi
        type: b7
        doc: Bits 56..62, reserved (zero).
      - id: l2_offset_hi
        type: b24
        doc: Bits 32..55 of the L2 table offset.
      - id: l2_offset_lo
        type: b23
        doc: Bits 9..31 of the L2 table offset, i.e. the low word shifted right by 9.
      - id: reserved_lo
        type: b9
        doc: Bits 0..8, reserved (zero).
    instances:
      is_allocated:
        value: l2_offset_hi != 0 or l2_offset_lo != 0
        doc: Whether the entry points at an L2 table (offset 0 means unallocated).
      l2_table:
        io: _root._io
        pos: l2_offset_hi * 4294967296 + l2_offset_lo * 512
        size: 1 << cluster_bits
        type: l2_table(cluster_bits, extended_l2)
        if: is_allocated
        doc: The L2 table this entry points at.

  l2_table:
    doc: An L2 table - one cluster of standard (8-byte) or extended (16-byte) entries.
    params:
      - id: cluster_bits
        type: u1
        doc: log2 of the cluster size.
      - id: extended_l2
        type: bool
        doc: Whether entries are extended (128-bit).
    seq:
      - id: entries
        type: l2_entry(cluster_bits, extended_l2)
        repeat: expr
        repeat-expr: '(1 << cluster_bits) >> (extended_l2 ? 4 : 3)'
        doc: The entries, one per guest cluster.

  l2_entry:
    doc: |
      An L2 table entry. Word 0 is a standard descriptor (bit 62 clear) or a compressed cluster
      descriptor (bit 62 set); extended L2 entries add a second word with the subcluster bitmaps.
      The compressed descriptor's split depends on cluster_bits: with x = 62 - (cluster_bits - 8),
      bits 0..x-1 are the host byte offset and bits x..61 the number of additional 512-byte sectors.
    params:
      - id: cluster_bits
        type: u1
        doc: log2 of the cluster size, which decides the compressed descriptor's field split.
      - id: extended_l2
        type: bool
        doc: Whether the entry has the 64-bit subcluster bitmap word.
    seq:
      - id: copied
        type: b1
        doc: Bit 63 - the data cluster has refcount exactly 1 (never set for compressed clusters).
      - id: compressed
        type: b1
        doc: Bit 62 - the cluster is compressed; bits 0..61 are then a compressed descriptor.
      - id: reserved_hi
        type: b6
        if: not compressed
        doc: Standard descriptor bits 56..61, reserved (zero).
      - id: host_offset_hi
        type: b24
        if: not compressed
        doc: Standard descriptor bits 32..55 of the host cluster offset.
      - id: host_offset_lo
        type: b23
        if: not compressed
        doc: Standard descriptor bits 9..31 of the host cluster offset (the low word shifted right by 9).
      - id: reserved_lo
        type: b8
        if: not compressed
        doc: Standard descriptor bits 1..8, reserved (zero).
      - id: zero
        type: b1
        if: not compressed
        doc: Standard descriptor bit 0 - the cluster reads as zeros (version 3; ignored with extended L2).
      - id: compressed_hi
        type: b30
        if: compressed
        doc: Compressed descriptor bits 32..61 (top bits of the offset and the sector count).
      - id: compressed_lo
        type: b32
        if: compressed
        doc: Compressed descriptor bits 0..31 (low word of the host byte offset).
      - id: zero_bitmap
        type: b32
        if: extended_l2
        doc: Extended word bits 32..63 - bit n set means subcluster n reads as zeros.
      - id: alloc_bitmap
        type: b32
        if: extended_l2
        doc: Extended word bits 0..31 - bit n set means subcluster n is allocated.
    instances:
      compressed_sectors_shift:
        value: 38 - cluster_bits
        doc: Position of the sector count within compressed_hi (x - 32 with x = 70 - cluster_bits).
      compressed_additional_sectors:
        value: compressed_hi >> compressed_sectors_shift
        if: compressed
        doc: Number of 512-byte sectors after the one holding the first compressed byte.
      compressed_offset_hi:
        value: compressed_hi & ((1 << compressed_sectors_shift) - 1)
        if: compressed
        doc: Bits 32..x-1 of the compressed data's host byte offset (the low word is compressed_lo).

  refcount_table:
    doc: The refcount table - offsets of refcount blocks.
    params:
      - id: cluster_bits
        type: u1
        doc: log2 of the cluster size, the size of a refcount block.
      - id: refcount_order
        type: u1
        doc: log2 of the refcount width in bits.
    seq:
      - id: entries
        type: refcount_table_entry(cluster_bits, refcount_order)
        repeat: eos
        doc: The entries, one per refcount block.

  refcount_table_entry:
    doc: A refcount table entry - the offset of one refcount block.
    params:
      - id: cluster_bits
        type: u1
        doc: log2 of the cluster size.
      - id: refcount_order
        type: u1
        doc: log2 of the refcount width in bits.
    seq:
      - id: refblock_offset_hi
        type: b32
        doc: Bits 32..63 of the refcount block offset.
      - id: refblock_offset_lo
        type: b23
        doc: Bits 9..31 of the refcount block offset (the low word shifted right by 9).
      - id: reserved
        type: b9
        doc: Bits 0..8, reserved (zero).
    instances:
      is_allocated:
        value: refblock_offset_hi != 0 or refblock_offset_lo != 0
        doc: Whether a refcount block exists for this range (else all its refcounts are 0).
      refcount_block:
        io: _root._io
        pos: refblock_offset_hi * 4294967296 + refblock_offset_lo * 512
        size: 1 << cluster_bits
        type: refcount_block(refcount_order)
        if: is_allocated
        doc: The refcount block this entry points at.

  refcount_block:
    doc: |
      A refcount block - one cluster of refcounts of 2^refcount_order bits each. Widths below 8
      bits are packed least significant bit first within each byte; wider ones are big-endian.
    params:
      - id: refcount_order
        type: u1
        doc: log2 of the refcount width in bits (0..6).
    seq:
      - id: entries
        type:
          switch-on: refcount_order
          cases:
            0: b1le
            1: b2le
            2: b4le
            3: u1
            4: u2
            5: u4
            6: u64
        repeat: eos
        doc: The refcounts, one per host cluster (64-bit ones as hi/lo halves; 1-bit ones as booleans).

  snapshot_entry:
    doc: One snapshot table entry; every entry but the last is padded to a multiple of 8 bytes.
    params:
      - id: cluster_bits
        type: u1
        doc: log2 of the cluster size, for the snapshot's L2 tables.
      - id: extended_l2
        type: bool
        doc: Whether L2 entries are extended.
      - id: is_last
        type: bool
        doc: Whether this is the table's last entry, which QEMU writes without trailing padding.
    seq:
      - id: l1_table_offset
        type: u64
        doc: File offset of the snapshot's L1 table (cluster aligned).
      - id: l1_size
        type: u4
        doc: Number of entries in the snapshot's L1 table.
      - id: len_id
        type: u2
        doc: Length of the id string.
      - id: len_name
        type: u2
        doc: Length of the name.
      - id: date_sec
        type: u4
        doc: Creation time, seconds since the Unix epoch.
      - id: date_nsec
        type: u4
        doc: Creation time, nanoseconds part.
      - id: vm_clock_nsec
        type: u64
        doc: Guest run time when the snapshot was taken, in nanoseconds.
      - id: vm_state_size
        type: u4
        doc: Size of the saved VM state in bytes (0 for disk-only snapshots; see vm_state_size_large).
      - id: len_extra_data
        type: u4
        doc: Size of the extra data in bytes (at least 16 for version 3; QEMU refuses more than 1024).
      - id: extra_data
        size: len_extra_data
        type: snapshot_extra_data(len_extra_data)
        doc: The extra data - known fields, then bytes this description does not know.
      - id: id_str
        size: len_id
        type: str
        encoding: ASCII
        doc: The snapshot id, a decimal number as a string (not NUL-terminated).
      - id: name
        size: len_name
        type: str
        encoding: ASCII
        doc: The snapshot name (not NUL-terminated).
      - id: padding
        size: (8 - (40 + len_extra_data + len_id + len_name) % 8) % 8
        if: not is_last
        doc: Padding to a multiple of 8 bytes before the next entry (QEMU aligns each entry's start, so the last has none).
    instances:
      l1_table:
        io: _root._io
        pos: l1_table_offset.num
        type: l1_entry(cluster_bits, extended_l2)
        repeat: expr
        repeat-expr: l1_size
        doc: The snapshot's L1 table.

  snapshot_extra_data:
    doc: Snapshot extra data; fields are present when the extra data is long enough to hold them.
    params:
      - id: len
        type: u4
        doc: Size of the extra data in bytes.
    seq:
      - id: vm_state_size_large
        type: u64
        if: len >= 8
        doc: Size of the VM state in bytes (overrides the 32-bit vm_state_size).
      - id: disk_size
        type: u64
        if: len >= 16
        doc: Virtual disk size at the time of the snapshot.
      - id: icount
        type: u64
        if: len >= 24
        doc: Instruction count for record/replay, all bits set when unused.
      - id: unknown
        size: 'len - (len >= 24 ? 24 : len >= 16 ? 16 : len >= 8 ? 8 : 0)'
        doc: Extra data this description does not know (kept verbatim), or the tail of a too-short field.

  bitmap_directory:
    doc: The persistent bitmap directory - variable-length entries, each padded to 8 bytes.
    seq:
      - id: entries
        type: bitmap_directory_entry
        repeat: eos
        doc: The directory entries.

  bitmap_directory_entry:
    doc: One bitmap directory entry.
    seq:
      - id: bitmap_table_offset
        type: u64
        doc: File offset of the bitmap table (cluster aligned).
      - id: bitmap_table_size
        type: u4
        doc: Number of entries in the bitmap table.
      - id: reserved_flags
        type: b29
        doc: Flag bits 3..31, reserved (zero).
      - id: extra_data_compatible
        type: b1
        doc: Flag bit 2 - the extra data may be ignored by a reader that does not know it.
      - id: auto
        type: b1
        doc: Flag bit 1 - the bitmap tracks guest writes.
      - id: in_use
        type: b1
        doc: Flag bit 0 - the bitmap was not saved cleanly and is inconsistent.
      - id: bitmap_type
        type: u1
        enum: bitmap_type
        doc: Bitmap type, 1 for dirty tracking.
      - id: granularity_bits
        type: u1
        doc: log2 of the number of guest bytes one bit covers (QEMU 9..31).
      - id: len_name
        type: u2
        doc: Length of the name (1..1023).
      - id: len_extra_data
        type: u4
        doc: Size of the extra data in bytes.
      - id: extra_data
        size: len_extra_data
        doc: Extra data, kept verbatim.
      - id: name
        size: len_name
        type: str
        encoding: ASCII
        doc: Bitmap name (not NUL-terminated).
      - id: padding
        size: (8 - (24 + len_extra_data + len_name) % 8) % 8
        doc: Padding to a multiple of 8 bytes.
    instances:
      bitmap_table:
        io: _root._io
        pos: bitmap_table_offset.num
        type: bitmap_table_entry
        repeat: expr
        repeat-expr: bitmap_table_size
        doc: The bitmap table.

  bitmap_table_entry:
    doc: A bitmap table entry - the offset of one bitmap data cluster, or all-zeros/all-ones.
    seq:
      - id: reserved_hi
        type: b8
        doc: Bits 56..63, reserved (zero).
      - id: offset_hi
        type: b24
        doc: Bits 32..55 of the data cluster offset.
      - id: offset_lo
        type: b23
        doc: Bits 9..31 of the data cluster offset (the low word shifted right by 9).
      - id: reserved_lo
        type: b8
        doc: Bits 1..8, reserved (zero).
      - id: all_ones
        type: b1
        doc: Bit 0 - when the offset is 0, the cluster's bits are all ones (else all zeros).

enums:
  crypt_method:
    0: none
    1: aes
    2: luks
  compression_type:
    0: zlib
    1: zstd
  header_extension_type:
    0x00000000: end
    0xe2792aca: backing_file_format
    0x6803f857: feature_name_table
    0x23852875: bitmaps
    0x0537be77: full_disk_encryption
    0x44415441: external_data_file
  feature_type:
    0: incompatible
    1: compatible
    2: autoclear
  incompatible_feature_bit:
    0: dirty
    1: corrupt
    2: external_data_file
    3: compression_type
    4: extended_l2
  compatible_feature_bit:
    0: lazy_refcounts
  autoclear_feature_bit:
    0: bitmaps
    1: raw_external_data
  bitmap_type:
    1: dirty_tracking
