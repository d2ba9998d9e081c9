// GENERATED FILE - DO NOT EDIT. kaitai-struct-compiler output for spec/qcow2.ksy (sha256 c7e22bebd2efa3aa799dc0a23e4a6ddc0a1882c6031238bea6469a1ad70795b2).
// Used only to cross-check generated/qcow2.ts. Regenerate with `npm run generate`.
// This is a generated file! Please edit source .ksy file and use kaitai-struct-compiler to rebuild

(function (root, factory) {
  if (typeof define === 'function' && define.amd) {
    define(['exports', 'kaitai-struct/KaitaiStream'], factory);
  } else if (typeof exports === 'object' && exports !== null && typeof exports.nodeType !== 'number') {
    factory(exports, require('kaitai-struct/KaitaiStream'));
  } else {
    factory(root.Qcow2 || (root.Qcow2 = {}), root.KaitaiStream);
  }
})(typeof self !== 'undefined' ? self : this, function (Qcow2_, KaitaiStream) {
/**
 * The on-disk structures of QEMU's qcow2 image format, as defined by QEMU's
 * docs/interop/qcow2.rst (see also docs/format/README.md of this project).
 * 
 * Conventions of this description, so that every parser generated from it is exact:
 * * Every 64-bit quantity is split into 32-bit halves: plain integers use the `u64` type
 *   (`hi`, `lo`), bit-packed entries use bit fields of at most 32 bits. Kaitai's JavaScript
 *   target reads `u8` into a double and evaluates `&`/`>>` on 32 bits, so a single 64-bit
 *   field would lose bits above 2^53. The `num` instance of `u64` is a double and is only
 *   used for file positions (a position at or above 2^53 is beyond the end of every file).
 * * `valid:` holds the must-reject rules that belong to one structure. Rules that relate
 *   several structures (overlaps, refcounts, limits against the file size) live in the
 *   validation layer above the generated code, which reports them with QEMU's messages.
 * * Enums named `*_bit` list bit numbers (the feature bits); the generator also emits their masks.
 * * Structures reached through a pointer (L1 and L2 tables, refcount blocks, the snapshot
 *   table, the bitmap directory) are `instances` with `pos`, read on first access.
 */

var Qcow2 = (function() {
  Qcow2.AutoclearFeatureBit = Object.freeze({
    BITMAPS: 0,
    RAW_EXTERNAL_DATA: 1,

    0: "BITMAPS",
    1: "RAW_EXTERNAL_DATA",
  });

  Qcow2.BitmapType = Object.freeze({
    DIRTY_TRACKING: 1,

    1: "DIRTY_TRACKING",
  });

  Qcow2.CompatibleFeatureBit = Object.freeze({
    LAZY_REFCOUNTS: 0,

    0: "LAZY_REFCOUNTS",
  });

  Qcow2.CompressionType = Object.freeze({
    ZLIB: 0,
    ZSTD: 1,

    0: "ZLIB",
    1: "ZSTD",
  });

  Qcow2.CryptMethod = Object.freeze({
    NONE: 0,
    AES: 1,
    LUKS: 2,

    0: "NONE",
    1: "AES",
    2: "LUKS",
  });

  Qcow2.FeatureType = Object.freeze({
    INCOMPATIBLE: 0,
    COMPATIBLE: 1,
    AUTOCLEAR: 2,

    0: "INCOMPATIBLE",
    1: "COMPATIBLE",
    2: "AUTOCLEAR",
  });

  Qcow2.HeaderExtensionType = Object.freeze({
    END: 0,
    FULL_DISK_ENCRYPTION: 87539319,
    BITMAPS: 595929205,
    EXTERNAL_DATA_FILE: 1145132097,
    FEATURE_NAME_TABLE: 1745090647,
    BACKING_FILE_FORMAT: 3799591626,

    0: "END",
    87539319: "FULL_DISK_ENCRYPTION",
    595929205: "BITMAPS",
    1145132097: "EXTERNAL_DATA_FILE",
    1745090647: "FEATURE_NAME_TABLE",
    3799591626: "BACKING_FILE_FORMAT",
  });

  Qcow2.IncompatibleFeatureBit = Object.freeze({
    DIRTY: 0,
    CORRUPT: 1,
    EXTERNAL_DATA_FILE: 2,
    COMPRESSION_TYPE: 3,
    EXTENDED_L2: 4,

    0: "DIRTY",
    1: "CORRUPT",
    2: "EXTERNAL_DATA_FILE",
    3: "COMPRESSION_TYPE",
    4: "EXTENDED_L2",
  });

  function Qcow2(_io, _parent, _root) {
    this._io = _io;
    this._parent = _parent;
    this._root = _root || this;

    this._read();
  }
  Qcow2.prototype._read = function() {
    this.header = new Header(this._io, this, this._root);
    this._raw_headerExtensions = this._io.readBytes(this.extensionsEnd - this.header.lenHeader);
    var _io__raw_headerExtensions = new KaitaiStream(this._raw_headerExtensions);
    this.headerExtensions = new HeaderExtensionArea(_io__raw_headerExtensions, this, this._root);
  }

  /**
   * Backing file format name extension (e.g. "qcow2" or "raw").
   */

  var BackingFileFormat = Qcow2.BackingFileFormat = (function() {
    function BackingFileFormat(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    BackingFileFormat.prototype._read = function() {
      this.name = KaitaiStream.bytesToStr(this._io.readBytesFull(), "ASCII");
    }

    /**
     * The format name, not NUL-terminated (QEMU refuses 16 bytes or more).
     */

    return BackingFileFormat;
  })();

  /**
   * The persistent bitmap directory - variable-length entries, each padded to 8 bytes.
   */

  var BitmapDirectory = Qcow2.BitmapDirectory = (function() {
    function BitmapDirectory(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    BitmapDirectory.prototype._read = function() {
      this.entries = [];
      var i = 0;
      while (!this._io.isEof()) {
        this.entries.push(new BitmapDirectoryEntry(this._io, this, this._root));
        i++;
      }
    }

    /**
     * The directory entries.
     */

    return BitmapDirectory;
  })();

  /**
   * One bitmap directory entry.
   */

  var BitmapDirectoryEntry = Qcow2.BitmapDirectoryEntry = (function() {
    function BitmapDirectoryEntry(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    BitmapDirectoryEntry.prototype._read = function() {
      this.bitmapTableOffset = new U64(this._io, this, this._root);
      this.bitmapTableSize = this._io.readU4be();
      this.reservedFlags = this._io.readBitsIntBe(29);
      this.extraDataCompatible = this._io.readBitsIntBe(1) != 0;
      this.auto = this._io.readBitsIntBe(1) != 0;
      this.inUse = this._io.readBitsIntBe(1) != 0;
      this._io.alignToByte();
      this.bitmapType = this._io.readU1();
      this.granularityBits = this._io.readU1();
      this.lenName = this._io.readU2be();
      this.lenExtraData = this._io.readU4be();
      this.extraData = this._io.readBytes(this.lenExtraData);
      this.name = KaitaiStream.bytesToStr(this._io.readBytes(this.lenName), "ASCII");
      this.padding = this._io.readBytes(KaitaiStream.mod(8 - KaitaiStream.mod((24 + this.lenExtraData) + this.lenName, 8), 8));
    }

    /**
     * The bitmap table.
     */
    Object.defineProperty(BitmapDirectoryEntry.prototype, 'bitmapTable', {
      get: function() {
        if (this._m_bitmapTable !== undefined)
          return this._m_bitmapTable;
        var io = this._root._io;
        var _pos = io.pos;
        io.seek(this.bitmapTableOffset.num);
        this._m_bitmapTable = [];
        for (var i = 0; i < this.bitmapTableSize; i++) {
          this._m_bitmapTable.push(new BitmapTableEntry(io, this, this._root));
        }
        io.seek(_pos);
        return this._m_bitmapTable;
      }
    });

    /**
     * File offset of the bitmap table (cluster aligned).
     */

    /**
     * Number of entries in the bitmap table.
     */

    /**
     * Flag bits 3..31, reserved (zero).
     */

    /**
     * Flag bit 2 - the extra data may be ignored by a reader that does not know it.
     */

    /**
     * Flag bit 1 - the bitmap tracks guest writes.
     */

    /**
     * Flag bit 0 - the bitmap was not saved cleanly and is inconsistent.
     */

    /**
     * Bitmap type, 1 for dirty tracking.
     */

    /**
     * log2 of the number of guest bytes one bit covers (QEMU 9..31).
     */

    /**
     * Length of the name (1..1023).
     */

    /**
     * Size of the extra data in bytes.
     */

    /**
     * Extra data, kept verbatim.
     */

    /**
     * Bitmap name (not NUL-terminated).
     */

    /**
     * Padding to a multiple of 8 bytes.
     */

    return BitmapDirectoryEntry;
  })();

  /**
   * A bitmap table entry - the offset of one bitmap data cluster, or all-zeros/all-ones.
   */

  var BitmapTableEntry = Qcow2.BitmapTableEntry = (function() {
    function BitmapTableEntry(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    BitmapTableEntry.prototype._read = function() {
      this.reservedHi = this._io.readBitsIntBe(8);
      this.offsetHi = this._io.readBitsIntBe(24);
      this.offsetLo = this._io.readBitsIntBe(23);
      this.reservedLo = this._io.readBitsIntBe(8);
      this.allOnes = this._io.readBitsIntBe(1) != 0;
    }

    /**
     * Bits 56..63, reserved (zero).
     */

    /**
     * Bits 32..55 of the data cluster offset.
     */

    /**
     * Bits 9..31 of the data cluster offset (the low word shifted right by 9).
     */

    /**
     * Bits 1..8, reserved (zero).
     */

    /**
     * Bit 0 - when the offset is 0, the cluster's bits are all ones (else all zeros).
     */

    return BitmapTableEntry;
  })();

  /**
   * Bitmaps extension - where the persistent dirty bitmap directory is.
   */

  var BitmapsExtension = Qcow2.BitmapsExtension = (function() {
    function BitmapsExtension(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    BitmapsExtension.prototype._read = function() {
      this.nbBitmaps = this._io.readU4be();
      this.reserved = this._io.readU4be();
      if (!(this.reserved == 0)) {
        throw new KaitaiStream.ValidationNotEqualError(0, this.reserved, this._io, "/types/bitmaps_extension/seq/1");
      }
      this.bitmapDirectorySize = new U64(this._io, this, this._root);
      this.bitmapDirectoryOffset = new U64(this._io, this, this._root);
    }

    /**
     * The bitmap directory.
     */
    Object.defineProperty(BitmapsExtension.prototype, 'bitmapDirectory', {
      get: function() {
        if (this._m_bitmapDirectory !== undefined)
          return this._m_bitmapDirectory;
        var io = this._root._io;
        var _pos = io.pos;
        io.seek(this.bitmapDirectoryOffset.num);
        this._raw__m_bitmapDirectory = io.readBytes(this.bitmapDirectorySize.num);
        var _io__raw__m_bitmapDirectory = new KaitaiStream(this._raw__m_bitmapDirectory);
        this._m_bitmapDirectory = new BitmapDirectory(_io__raw__m_bitmapDirectory, this, this._root);
        io.seek(_pos);
        return this._m_bitmapDirectory;
      }
    });

    /**
     * Number of bitmaps in the directory (at least 1).
     */

    /**
     * Reserved, must be zero.
     */

    /**
     * Size of the bitmap directory in bytes.
     */

    /**
     * File offset of the bitmap directory (cluster aligned).
     */

    return BitmapsExtension;
  })();

  /**
   * External data file name extension.
   */

  var ExternalDataFileName = Qcow2.ExternalDataFileName = (function() {
    function ExternalDataFileName(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    ExternalDataFileName.prototype._read = function() {
      this.name = KaitaiStream.bytesToStr(this._io.readBytesFull(), "ASCII");
    }

    /**
     * The data file name, not NUL-terminated.
     */

    return ExternalDataFileName;
  })();

  /**
   * One feature name table entry.
   */

  var FeatureNameEntry = Qcow2.FeatureNameEntry = (function() {
    function FeatureNameEntry(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    FeatureNameEntry.prototype._read = function() {
      this.featureType = this._io.readU1();
      this.bit = this._io.readU1();
      this.name = KaitaiStream.bytesToStr(KaitaiStream.bytesStripRight(this._io.readBytes(46), 0), "ASCII");
    }

    /**
     * Which feature field the bit is in - 0 incompatible, 1 compatible, 2 autoclear.
     */

    /**
     * Bit number within that field (0..63).
     */

    /**
     * Feature name, NUL-padded (not terminated when it is 46 characters long).
     */

    return FeatureNameEntry;
  })();

  /**
   * Feature name table extension - human-readable names of feature bits.
   */

  var FeatureNameTable = Qcow2.FeatureNameTable = (function() {
    function FeatureNameTable(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    FeatureNameTable.prototype._read = function() {
      this.entries = [];
      var i = 0;
      while (!this._io.isEof()) {
        this.entries.push(new FeatureNameEntry(this._io, this, this._root));
        i++;
      }
    }

    /**
     * The 48-byte entries.
     */

    return FeatureNameTable;
  })();

  /**
   * Full disk encryption header pointer extension (LUKS header location).
   */

  var FullDiskEncryptionPointer = Qcow2.FullDiskEncryptionPointer = (function() {
    function FullDiskEncryptionPointer(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    FullDiskEncryptionPointer.prototype._read = function() {
      this.offset = new U64(this._io, this, this._root);
      this.length = new U64(this._io, this, this._root);
    }

    /**
     * File offset of the encryption header (cluster aligned).
     */

    /**
     * Length of the encryption header and key material in bytes.
     */

    return FullDiskEncryptionPointer;
  })();

  /**
   * The qcow2 header (version 2 ends after snapshots_offset; version 3 adds feature bits and more).
   */

  var Header = Qcow2.Header = (function() {
    function Header(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    Header.prototype._read = function() {
      this.magic = this._io.readBytes(4);
      if (!((KaitaiStream.byteArrayCompare(this.magic, new Uint8Array([81, 70, 73, 251])) == 0))) {
        throw new KaitaiStream.ValidationNotEqualError(new Uint8Array([81, 70, 73, 251]), this.magic, this._io, "/types/header/seq/0");
      }
      this.version = this._io.readU4be();
      if (!( ((this.version == 2) || (this.version == 3)) )) {
        throw new KaitaiStream.ValidationNotAnyOfError(this.version, this._io, "/types/header/seq/1");
      }
      this.backingFileOffset = new U64(this._io, this, this._root);
      this.backingFileSize = this._io.readU4be();
      this.clusterBits = this._io.readU4be();
      if (!(this.clusterBits >= 9)) {
        throw new KaitaiStream.ValidationLessThanError(9, this.clusterBits, this._io, "/types/header/seq/4");
      }
      if (!(this.clusterBits <= 21)) {
        throw new KaitaiStream.ValidationGreaterThanError(21, this.clusterBits, this._io, "/types/header/seq/4");
      }
      this.size = new U64(this._io, this, this._root);
      this.cryptMethod = this._io.readU4be();
      if (!( ((this.cryptMethod == Qcow2.CryptMethod.NONE) || (this.cryptMethod == Qcow2.CryptMethod.AES) || (this.cryptMethod == Qcow2.CryptMethod.LUKS)) )) {
        throw new KaitaiStream.ValidationNotAnyOfError(this.cryptMethod, this._io, "/types/header/seq/6");
      }
      this.l1Size = this._io.readU4be();
      this.l1TableOffset = new U64(this._io, this, this._root);
      this.refcountTableOffset = new U64(this._io, this, this._root);
      this.refcountTableClusters = this._io.readU4be();
      this.nbSnapshots = this._io.readU4be();
      this.snapshotsOffset = new U64(this._io, this, this._root);
      if (this.version >= 3) {
        this.incompatibleFeatures = new U64(this._io, this, this._root);
      }
      if (this.version >= 3) {
        this.compatibleFeatures = new U64(this._io, this, this._root);
      }
      if (this.version >= 3) {
        this.autoclearFeatures = new U64(this._io, this, this._root);
      }
      if (this.version >= 3) {
        this.refcountOrder = this._io.readU4be();
        if (!(this.refcountOrder <= 6)) {
          throw new KaitaiStream.ValidationGreaterThanError(6, this.refcountOrder, this._io, "/types/header/seq/16");
        }
      }
      if (this.version >= 3) {
        this.headerLength = this._io.readU4be();
        if (!(this.headerLength >= 104)) {
          throw new KaitaiStream.ValidationLessThanError(104, this.headerLength, this._io, "/types/header/seq/17");
        }
        if (!(this.headerLength <= this.clusterSize)) {
          throw new KaitaiStream.ValidationGreaterThanError(this.clusterSize, this.headerLength, this._io, "/types/header/seq/17");
        }
      }
      if ( ((this.version >= 3) && (this.headerLength > 104)) ) {
        this.compressionType = this._io.readU1();
        if (!( ((this.compressionType == Qcow2.CompressionType.ZLIB) || (this.compressionType == Qcow2.CompressionType.ZSTD)) )) {
          throw new KaitaiStream.ValidationNotAnyOfError(this.compressionType, this._io, "/types/header/seq/18");
        }
      }
      if ( ((this.version >= 3) && (this.headerLength > 105)) ) {
        this.padding = this._io.readBytes((this.headerLength < 112 ? this.headerLength : 112) - 105);
      }
      if ( ((this.version >= 3) && (this.headerLength > 112)) ) {
        this.unknownHeaderFields = this._io.readBytes(this.headerLength - 112);
      }
    }

    /**
     * Cluster size in bytes.
     */
    Object.defineProperty(Header.prototype, 'clusterSize', {
      get: function() {
        if (this._m_clusterSize !== undefined)
          return this._m_clusterSize;
        this._m_clusterSize = 1 << this.clusterBits;
        return this._m_clusterSize;
      }
    });

    /**
     * The compression type in use, 0 (zlib) when the field is absent.
     */
    Object.defineProperty(Header.prototype, 'compressionTypeEffective', {
      get: function() {
        if (this._m_compressionTypeEffective !== undefined)
          return this._m_compressionTypeEffective;
        this._m_compressionTypeEffective = ( ((this.version >= 3) && (this.headerLength > 104))  ? this.compressionType : 0);
        return this._m_compressionTypeEffective;
      }
    });

    /**
     * Autoclear bit 0 - the bitmaps extension is consistent.
     */
    Object.defineProperty(Header.prototype, 'hasBitmaps', {
      get: function() {
        if (this._m_hasBitmaps !== undefined)
          return this._m_hasBitmaps;
        this._m_hasBitmaps = (this.version >= 3 ? (this.autoclearFeatures.lo & 1 << Qcow2.AutoclearFeatureBit.BITMAPS) != 0 : false);
        return this._m_hasBitmaps;
      }
    });

    /**
     * Incompatible bit 3 - the compression_type field is non-zero.
     */
    Object.defineProperty(Header.prototype, 'hasCompressionType', {
      get: function() {
        if (this._m_hasCompressionType !== undefined)
          return this._m_hasCompressionType;
        this._m_hasCompressionType = (this.version >= 3 ? (this.incompatibleFeatures.lo & 1 << Qcow2.IncompatibleFeatureBit.COMPRESSION_TYPE) != 0 : false);
        return this._m_hasCompressionType;
      }
    });

    /**
     * Incompatible bit 4 - L2 entries are 128 bits with subcluster bitmaps.
     */
    Object.defineProperty(Header.prototype, 'hasExtendedL2', {
      get: function() {
        if (this._m_hasExtendedL2 !== undefined)
          return this._m_hasExtendedL2;
        this._m_hasExtendedL2 = (this.version >= 3 ? (this.incompatibleFeatures.lo & 1 << Qcow2.IncompatibleFeatureBit.EXTENDED_L2) != 0 : false);
        return this._m_hasExtendedL2;
      }
    });

    /**
     * Incompatible bit 2 - guest data lives in an external data file.
     */
    Object.defineProperty(Header.prototype, 'hasExternalDataFile', {
      get: function() {
        if (this._m_hasExternalDataFile !== undefined)
          return this._m_hasExternalDataFile;
        this._m_hasExternalDataFile = (this.version >= 3 ? (this.incompatibleFeatures.lo & 1 << Qcow2.IncompatibleFeatureBit.EXTERNAL_DATA_FILE) != 0 : false);
        return this._m_hasExternalDataFile;
      }
    });

    /**
     * Compatible bit 0 - refcount updates may be postponed.
     */
    Object.defineProperty(Header.prototype, 'hasLazyRefcounts', {
      get: function() {
        if (this._m_hasLazyRefcounts !== undefined)
          return this._m_hasLazyRefcounts;
        this._m_hasLazyRefcounts = (this.version >= 3 ? (this.compatibleFeatures.lo & 1 << Qcow2.CompatibleFeatureBit.LAZY_REFCOUNTS) != 0 : false);
        return this._m_hasLazyRefcounts;
      }
    });

    /**
     * Autoclear bit 1 - the external data file is a valid standalone raw image.
     */
    Object.defineProperty(Header.prototype, 'hasRawExternalData', {
      get: function() {
        if (this._m_hasRawExternalData !== undefined)
          return this._m_hasRawExternalData;
        this._m_hasRawExternalData = (this.version >= 3 ? (this.autoclearFeatures.lo & 1 << Qcow2.AutoclearFeatureBit.RAW_EXTERNAL_DATA) != 0 : false);
        return this._m_hasRawExternalData;
      }
    });

    /**
     * Incompatible bit 1 - metadata may be corrupt; write only to repair.
     */
    Object.defineProperty(Header.prototype, 'isCorrupt', {
      get: function() {
        if (this._m_isCorrupt !== undefined)
          return this._m_isCorrupt;
        this._m_isCorrupt = (this.version >= 3 ? (this.incompatibleFeatures.lo & 1 << Qcow2.IncompatibleFeatureBit.CORRUPT) != 0 : false);
        return this._m_isCorrupt;
      }
    });

    /**
     * Incompatible bit 0 - refcounts may be inconsistent (lazy refcounts).
     */
    Object.defineProperty(Header.prototype, 'isDirty', {
      get: function() {
        if (this._m_isDirty !== undefined)
          return this._m_isDirty;
        this._m_isDirty = (this.version >= 3 ? (this.incompatibleFeatures.lo & 1 << Qcow2.IncompatibleFeatureBit.DIRTY) != 0 : false);
        return this._m_isDirty;
      }
    });

    /**
     * Header length in bytes (72 for version 2).
     */
    Object.defineProperty(Header.prototype, 'lenHeader', {
      get: function() {
        if (this._m_lenHeader !== undefined)
          return this._m_lenHeader;
        this._m_lenHeader = (this.version >= 3 ? this.headerLength : 72);
        return this._m_lenHeader;
      }
    });

    /**
     * refcount_order, with version 2's implied 4 (16-bit refcounts).
     */
    Object.defineProperty(Header.prototype, 'refcountOrderEffective', {
      get: function() {
        if (this._m_refcountOrderEffective !== undefined)
          return this._m_refcountOrderEffective;
        this._m_refcountOrderEffective = (this.version >= 3 ? this.refcountOrder : 4);
        return this._m_refcountOrderEffective;
      }
    });

    /**
     * The magic "QFI\xfb".
     */

    /**
     * Format version, 2 or 3.
     */

    /**
     * File offset of the backing file name, or 0 when there is no backing file.
     */

    /**
     * Length of the backing file name in bytes (QEMU refuses more than 1023).
     */

    /**
     * log2 of the cluster size; QEMU supports 9 (512 bytes) to 21 (2 MiB).
     */

    /**
     * Virtual disk size in bytes.
     */

    /**
     * Encryption method, 0 none, 1 AES-CBC (legacy), 2 LUKS.
     */

    /**
     * Number of entries in the active L1 table.
     */

    /**
     * File offset of the active L1 table (cluster aligned).
     */

    /**
     * File offset of the refcount table (cluster aligned).
     */

    /**
     * Size of the refcount table in clusters.
     */

    /**
     * Number of internal snapshots.
     */

    /**
     * File offset of the snapshot table (cluster aligned).
     */

    /**
     * Incompatible feature bits; a reader must refuse an image with a bit it does not know.
     */

    /**
     * Compatible feature bits; unknown ones may be ignored.
     */

    /**
     * Auto-clear feature bits; a writer that does not know a bit must clear it.
     */

    /**
     * log2 of the refcount width in bits (0..6, i.e. 1..64 bits); version 2 implies 4.
     */

    /**
     * Length of the header in bytes, at least 104 and at most one cluster.
     */

    /**
     * Compression type of compressed clusters (an additional field, present when header_length > 104).
     */

    /**
     * Padding after compression_type up to byte 112 (zero when written by QEMU).
     */

    /**
     * Header bytes past 112 this description does not know; preserved verbatim on rewrite.
     */

    return Header;
  })();

  /**
   * One header extension - type, length, data, padding to a multiple of 8 bytes.
   */

  var HeaderExtension = Qcow2.HeaderExtension = (function() {
    function HeaderExtension(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    HeaderExtension.prototype._read = function() {
      this.type = this._io.readU4be();
      this.lenData = this._io.readU4be();
      switch (this.type) {
      case Qcow2.HeaderExtensionType.BACKING_FILE_FORMAT:
        this._raw_data = this._io.readBytes(this.lenData);
        var _io__raw_data = new KaitaiStream(this._raw_data);
        this.data = new BackingFileFormat(_io__raw_data, this, this._root);
        break;
      case Qcow2.HeaderExtensionType.BITMAPS:
        this._raw_data = this._io.readBytes(this.lenData);
        var _io__raw_data = new KaitaiStream(this._raw_data);
        this.data = new BitmapsExtension(_io__raw_data, this, this._root);
        break;
      case Qcow2.HeaderExtensionType.EXTERNAL_DATA_FILE:
        this._raw_data = this._io.readBytes(this.lenData);
        var _io__raw_data = new KaitaiStream(this._raw_data);
        this.data = new ExternalDataFileName(_io__raw_data, this, this._root);
        break;
      case Qcow2.HeaderExtensionType.FEATURE_NAME_TABLE:
        this._raw_data = this._io.readBytes(this.lenData);
        var _io__raw_data = new KaitaiStream(this._raw_data);
        this.data = new FeatureNameTable(_io__raw_data, this, this._root);
        break;
      case Qcow2.HeaderExtensionType.FULL_DISK_ENCRYPTION:
        this._raw_data = this._io.readBytes(this.lenData);
        var _io__raw_data = new KaitaiStream(this._raw_data);
        this.data = new FullDiskEncryptionPointer(_io__raw_data, this, this._root);
        break;
      default:
        this.data = this._io.readBytes(this.lenData);
        break;
      }
      this.padding = this._io.readBytes(KaitaiStream.mod(8 - KaitaiStream.mod(this.lenData, 8), 8));
    }

    /**
     * Extension type; unknown types are kept as raw bytes.
     */

    /**
     * Length of the data in bytes, without padding.
     */

    /**
     * The extension data, decoded for the known types and raw bytes otherwise.
     */

    /**
     * Padding of the data to a multiple of 8 bytes.
     */

    return HeaderExtension;
  })();

  /**
   * The list of header extensions, ended by an end-of-extensions entry or by the end of the area.
   */

  var HeaderExtensionArea = Qcow2.HeaderExtensionArea = (function() {
    function HeaderExtensionArea(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    HeaderExtensionArea.prototype._read = function() {
      if (!(this._io.isEof())) {
        this.extensions = [];
        var i = 0;
        do {
          var _ = new HeaderExtension(this._io, this, this._root);
          this.extensions.push(_);
          i++;
        } while (!( ((_.type == Qcow2.HeaderExtensionType.END) || (this._io.isEof())) ));
      }
      this.trailing = this._io.readBytesFull();
    }

    /**
     * The extensions in file order; the last one is normally the end marker.
     */

    /**
     * Bytes after the end marker up to the end of the area (zero when written by QEMU).
     */

    return HeaderExtensionArea;
  })();

  /**
   * An L1 table entry - the offset of one L2 table.
   */

  var L1Entry = Qcow2.L1Entry = (function() {
    function L1Entry(_io, _parent, _root, clusterBits, extendedL2) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.clusterBits = clusterBits;
      this.extendedL2 = extendedL2;

      this._read();
    }
    L1Entry.prototype._read = function() {
      this.copied = this._io.readBitsIntBe(1) != 0;
      this.reservedHi = this._io.readBitsIntBe(7);
      this.l2OffsetHi = this._io.readBitsIntBe(24);
      this.l2OffsetLo = this._io.readBitsIntBe(23);
      this.reservedLo = this._io.readBitsIntBe(9);
    }

    /**
     * Whether the entry points at an L2 table (offset 0 means unallocated).
     */
    Object.defineProperty(L1Entry.prototype, 'isAllocated', {
      get: function() {
        if (this._m_isAllocated !== undefined)
          return this._m_isAllocated;
        this._m_isAllocated =  ((this.l2OffsetHi != 0) || (this.l2OffsetLo != 0)) ;
        return this._m_isAllocated;
      }
    });

    /**
     * The L2 table this entry points at.
     */
    Object.defineProperty(L1Entry.prototype, 'l2Table', {
      get: function() {
        if (this._m_l2Table !== undefined)
          return this._m_l2Table;
        if (this.isAllocated) {
          var io = this._root._io;
          var _pos = io.pos;
          io.seek(this.l2OffsetHi * 4294967296 + this.l2OffsetLo * 512);
          this._raw__m_l2Table = io.readBytes(1 << this.clusterBits);
          var _io__raw__m_l2Table = new KaitaiStream(this._raw__m_l2Table);
          this._m_l2Table = new L2Table(_io__raw__m_l2Table, this, this._root, this.clusterBits, this.extendedL2);
          io.seek(_pos);
        }
        return this._m_l2Table;
      }
    });

    /**
     * Bit 63 - the L2 table has refcount exactly 1 (meaningful in the active L1 only).
     */

    /**
     * Bits 56..62, reserved (zero).
     */

    /**
     * Bits 32..55 of the L2 table offset.
     */

    /**
     * Bits 9..31 of the L2 table offset, i.e. the low word shifted right by 9.
     */

    /**
     * Bits 0..8, reserved (zero).
     */

    /**
     * log2 of the cluster size, for the size of the L2 table.
     */

    /**
     * Whether L2 entries are extended (128-bit).
     */

    return L1Entry;
  })();

  /**
   * An L2 table entry. Word 0 is a standard descriptor (bit 62 clear) or a compressed cluster
   * descriptor (bit 62 set); extended L2 entries add a second word with the subcluster bitmaps.
   * The compressed descriptor's split depends on cluster_bits: with x = 62 - (cluster_bits - 8),
   * bits 0..x-1 are the host byte offset and bits x..61 the number of additional 512-byte sectors.
   */

  var L2Entry = Qcow2.L2Entry = (function() {
    function L2Entry(_io, _parent, _root, clusterBits, extendedL2) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.clusterBits = clusterBits;
      this.extendedL2 = extendedL2;

      this._read();
    }
    L2Entry.prototype._read = function() {
      this.copied = this._io.readBitsIntBe(1) != 0;
      this.compressed = this._io.readBitsIntBe(1) != 0;
      if (!(this.compressed)) {
        this.reservedHi = this._io.readBitsIntBe(6);
      }
      if (!(this.compressed)) {
        this.hostOffsetHi = this._io.readBitsIntBe(24);
      }
      if (!(this.compressed)) {
        this.hostOffsetLo = this._io.readBitsIntBe(23);
      }
      if (!(this.compressed)) {
        this.reservedLo = this._io.readBitsIntBe(8);
      }
      if (!(this.compressed)) {
        this.zero = this._io.readBitsIntBe(1) != 0;
      }
      if (this.compressed) {
        this.compressedHi = this._io.readBitsIntBe(30);
      }
      if (this.compressed) {
        this.compressedLo = this._io.readBitsIntBe(32);
      }
      if (this.extendedL2) {
        this.zeroBitmap = this._io.readBitsIntBe(32);
      }
      if (this.extendedL2) {
        this.allocBitmap = this._io.readBitsIntBe(32);
      }
    }

    /**
     * Number of 512-byte sectors after the one holding the first compressed byte.
     */
    Object.defineProperty(L2Entry.prototype, 'compressedAdditionalSectors', {
      get: function() {
        if (this._m_compressedAdditionalSectors !== undefined)
          return this._m_compressedAdditionalSectors;
        if (this.compressed) {
          this._m_compressedAdditionalSectors = this.compressedHi >>> this.compressedSectorsShift;
        }
        return this._m_compressedAdditionalSectors;
      }
    });

    /**
     * Bits 32..x-1 of the compressed data's host byte offset (the low word is compressed_lo).
     */
    Object.defineProperty(L2Entry.prototype, 'compressedOffsetHi', {
      get: function() {
        if (this._m_compressedOffsetHi !== undefined)
          return this._m_compressedOffsetHi;
        if (this.compressed) {
          this._m_compressedOffsetHi = this.compressedHi & (1 << this.compressedSectorsShift) - 1;
        }
        return this._m_compressedOffsetHi;
      }
    });

    /**
     * Position of the sector count within compressed_hi (x - 32 with x = 70 - cluster_bits).
     */
    Object.defineProperty(L2Entry.prototype, 'compressedSectorsShift', {
      get: function() {
        if (this._m_compressedSectorsShift !== undefined)
          return this._m_compressedSectorsShift;
        this._m_compressedSectorsShift = 38 - this.clusterBits;
        return this._m_compressedSectorsShift;
      }
    });

    /**
     * Bit 63 - the data cluster has refcount exactly 1 (never set for compressed clusters).
     */

    /**
     * Bit 62 - the cluster is compressed; bits 0..61 are then a compressed descriptor.
     */

    /**
     * Standard descriptor bits 56..61, reserved (zero).
     */

    /**
     * Standard descriptor bits 32..55 of the host cluster offset.
     */

    /**
     * Standard descriptor bits 9..31 of the host cluster offset (the low word shifted right by 9).
     */

    /**
     * Standard descriptor bits 1..8, reserved (zero).
     */

    /**
     * Standard descriptor bit 0 - the cluster reads as zeros (version 3; ignored with extended L2).
     */

    /**
     * Compressed descriptor bits 32..61 (top bits of the offset and the sector count).
     */

    /**
     * Compressed descriptor bits 0..31 (low word of the host byte offset).
     */

    /**
     * Extended word bits 32..63 - bit n set means subcluster n reads as zeros.
     */

    /**
     * Extended word bits 0..31 - bit n set means subcluster n is allocated.
     */

    /**
     * log2 of the cluster size, which decides the compressed descriptor's field split.
     */

    /**
     * Whether the entry has the 64-bit subcluster bitmap word.
     */

    return L2Entry;
  })();

  /**
   * An L2 table - one cluster of standard (8-byte) or extended (16-byte) entries.
   */

  var L2Table = Qcow2.L2Table = (function() {
    function L2Table(_io, _parent, _root, clusterBits, extendedL2) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.clusterBits = clusterBits;
      this.extendedL2 = extendedL2;

      this._read();
    }
    L2Table.prototype._read = function() {
      this.entries = [];
      for (var i = 0; i < (1 << this.clusterBits) >>> (this.extendedL2 ? 4 : 3); i++) {
        this.entries.push(new L2Entry(this._io, this, this._root, this.clusterBits, this.extendedL2));
      }
    }

    /**
     * The entries, one per guest cluster.
     */

    /**
     * log2 of the cluster size.
     */

    /**
     * Whether entries are extended (128-bit).
     */

    return L2Table;
  })();

  /**
   * A refcount block - one cluster of refcounts of 2^refcount_order bits each. Widths below 8
   * bits are packed least significant bit first within each byte; wider ones are big-endian.
   */

  var RefcountBlock = Qcow2.RefcountBlock = (function() {
    function RefcountBlock(_io, _parent, _root, refcountOrder) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.refcountOrder = refcountOrder;

      this._read();
    }
    RefcountBlock.prototype._read = function() {
      this.entries = [];
      var i = 0;
      while (!this._io.isEof()) {
        switch (this.refcountOrder) {
        case 0:
          this.entries.push(this._io.readBitsIntLe(1) != 0);
          break;
        case 1:
          this.entries.push(this._io.readBitsIntLe(2));
          break;
        case 2:
          this.entries.push(this._io.readBitsIntLe(4));
          break;
        case 3:
          this.entries.push(this._io.readU1());
          break;
        case 4:
          this.entries.push(this._io.readU2be());
          break;
        case 5:
          this.entries.push(this._io.readU4be());
          break;
        case 6:
          this.entries.push(new U64(this._io, this, this._root));
          break;
        }
        i++;
      }
    }

    /**
     * The refcounts, one per host cluster (64-bit ones as hi/lo halves; 1-bit ones as booleans).
     */

    /**
     * log2 of the refcount width in bits (0..6).
     */

    return RefcountBlock;
  })();

  /**
   * The refcount table - offsets of refcount blocks.
   */

  var RefcountTable = Qcow2.RefcountTable = (function() {
    function RefcountTable(_io, _parent, _root, clusterBits, refcountOrder) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.clusterBits = clusterBits;
      this.refcountOrder = refcountOrder;

      this._read();
    }
    RefcountTable.prototype._read = function() {
      this.entries = [];
      var i = 0;
      while (!this._io.isEof()) {
        this.entries.push(new RefcountTableEntry(this._io, this, this._root, this.clusterBits, this.refcountOrder));
        i++;
      }
    }

    /**
     * The entries, one per refcount block.
     */

    /**
     * log2 of the cluster size, the size of a refcount block.
     */

    /**
     * log2 of the refcount width in bits.
     */

    return RefcountTable;
  })();

  /**
   * A refcount table entry - the offset of one refcount block.
   */

  var RefcountTableEntry = Qcow2.RefcountTableEntry = (function() {
    function RefcountTableEntry(_io, _parent, _root, clusterBits, refcountOrder) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.clusterBits = clusterBits;
      this.refcountOrder = refcountOrder;

      this._read();
    }
    RefcountTableEntry.prototype._read = function() {
      this.refblockOffsetHi = this._io.readBitsIntBe(32);
      this.refblockOffsetLo = this._io.readBitsIntBe(23);
      this.reserved = this._io.readBitsIntBe(9);
    }

    /**
     * Whether a refcount block exists for this range (else all its refcounts are 0).
     */
    Object.defineProperty(RefcountTableEntry.prototype, 'isAllocated', {
      get: function() {
        if (this._m_isAllocated !== undefined)
          return this._m_isAllocated;
        this._m_isAllocated =  ((this.refblockOffsetHi != 0) || (this.refblockOffsetLo != 0)) ;
        return this._m_isAllocated;
      }
    });

    /**
     * The refcount block this entry points at.
     */
    Object.defineProperty(RefcountTableEntry.prototype, 'refcountBlock', {
      get: function() {
        if (this._m_refcountBlock !== undefined)
          return this._m_refcountBlock;
        if (this.isAllocated) {
          var io = this._root._io;
          var _pos = io.pos;
          io.seek(this.refblockOffsetHi * 4294967296 + this.refblockOffsetLo * 512);
          this._raw__m_refcountBlock = io.readBytes(1 << this.clusterBits);
          var _io__raw__m_refcountBlock = new KaitaiStream(this._raw__m_refcountBlock);
          this._m_refcountBlock = new RefcountBlock(_io__raw__m_refcountBlock, this, this._root, this.refcountOrder);
          io.seek(_pos);
        }
        return this._m_refcountBlock;
      }
    });

    /**
     * Bits 32..63 of the refcount block offset.
     */

    /**
     * Bits 9..31 of the refcount block offset (the low word shifted right by 9).
     */

    /**
     * Bits 0..8, reserved (zero).
     */

    /**
     * log2 of the cluster size.
     */

    /**
     * log2 of the refcount width in bits.
     */

    return RefcountTableEntry;
  })();

  /**
   * One snapshot table entry; every entry but the last is padded to a multiple of 8 bytes.
   */

  var SnapshotEntry = Qcow2.SnapshotEntry = (function() {
    function SnapshotEntry(_io, _parent, _root, clusterBits, extendedL2, isLast) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.clusterBits = clusterBits;
      this.extendedL2 = extendedL2;
      this.isLast = isLast;

      this._read();
    }
    SnapshotEntry.prototype._read = function() {
      this.l1TableOffset = new U64(this._io, this, this._root);
      this.l1Size = this._io.readU4be();
      this.lenId = this._io.readU2be();
      this.lenName = this._io.readU2be();
      this.dateSec = this._io.readU4be();
      this.dateNsec = this._io.readU4be();
      this.vmClockNsec = new U64(this._io, this, this._root);
      this.vmStateSize = this._io.readU4be();
      this.lenExtraData = this._io.readU4be();
      this._raw_extraData = this._io.readBytes(this.lenExtraData);
      var _io__raw_extraData = new KaitaiStream(this._raw_extraData);
      this.extraData = new SnapshotExtraData(_io__raw_extraData, this, this._root, this.lenExtraData);
      this.idStr = KaitaiStream.bytesToStr(this._io.readBytes(this.lenId), "ASCII");
      this.name = KaitaiStream.bytesToStr(this._io.readBytes(this.lenName), "ASCII");
      if (!(this.isLast)) {
        this.padding = this._io.readBytes(KaitaiStream.mod(8 - KaitaiStream.mod(((40 + this.lenExtraData) + this.lenId) + this.lenName, 8), 8));
      }
    }

    /**
     * The snapshot's L1 table.
     */
    Object.defineProperty(SnapshotEntry.prototype, 'l1Table', {
      get: function() {
        if (this._m_l1Table !== undefined)
          return this._m_l1Table;
        var io = this._root._io;
        var _pos = io.pos;
        io.seek(this.l1TableOffset.num);
        this._m_l1Table = [];
        for (var i = 0; i < this.l1Size; i++) {
          this._m_l1Table.push(new L1Entry(io, this, this._root, this.clusterBits, this.extendedL2));
        }
        io.seek(_pos);
        return this._m_l1Table;
      }
    });

    /**
     * File offset of the snapshot's L1 table (cluster aligned).
     */

    /**
     * Number of entries in the snapshot's L1 table.
     */

    /**
     * Length of the id string.
     */

    /**
     * Length of the name.
     */

    /**
     * Creation time, seconds since the Unix epoch.
     */

    /**
     * Creation time, nanoseconds part.
     */

    /**
     * Guest run time when the snapshot was taken, in nanoseconds.
     */

    /**
     * Size of the saved VM state in bytes (0 for disk-only snapshots; see vm_state_size_large).
     */

    /**
     * Size of the extra data in bytes (at least 16 for version 3; QEMU refuses more than 1024).
     */

    /**
     * The extra data - known fields, then bytes this description does not know.
     */

    /**
     * The snapshot id, a decimal number as a string (not NUL-terminated).
     */

    /**
     * The snapshot name (not NUL-terminated).
     */

    /**
     * Padding to a multiple of 8 bytes before the next entry (QEMU aligns each entry's start, so the last has none).
     */

    /**
     * log2 of the cluster size, for the snapshot's L2 tables.
     */

    /**
     * Whether L2 entries are extended.
     */

    /**
     * Whether this is the table's last entry, which QEMU writes without trailing padding.
     */

    return SnapshotEntry;
  })();

  /**
   * Snapshot extra data; fields are present when the extra data is long enough to hold them.
   */

  var SnapshotExtraData = Qcow2.SnapshotExtraData = (function() {
    function SnapshotExtraData(_io, _parent, _root, len) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;
      this.len = len;

      this._read();
    }
    SnapshotExtraData.prototype._read = function() {
      if (this.len >= 8) {
        this.vmStateSizeLarge = new U64(this._io, this, this._root);
      }
      if (this.len >= 16) {
        this.diskSize = new U64(this._io, this, this._root);
      }
      if (this.len >= 24) {
        this.icount = new U64(this._io, this, this._root);
      }
      this.unknown = this._io.readBytes(this.len - (this.len >= 24 ? 24 : (this.len >= 16 ? 16 : (this.len >= 8 ? 8 : 0))));
    }

    /**
     * Size of the VM state in bytes (overrides the 32-bit vm_state_size).
     */

    /**
     * Virtual disk size at the time of the snapshot.
     */

    /**
     * Instruction count for record/replay, all bits set when unused.
     */

    /**
     * Extra data this description does not know (kept verbatim), or the tail of a too-short field.
     */

    /**
     * Size of the extra data in bytes.
     */

    return SnapshotExtraData;
  })();

  /**
   * A 64-bit big-endian unsigned integer kept as two exact 32-bit halves.
   */

  var U64 = Qcow2.U64 = (function() {
    function U64(_io, _parent, _root) {
      this._io = _io;
      this._parent = _parent;
      this._root = _root;

      this._read();
    }
    U64.prototype._read = function() {
      this.hi = this._io.readU4be();
      this.lo = this._io.readU4be();
    }

    /**
     * The value as a double - exact below 2^53; used only for file positions and sizes.
     */
    Object.defineProperty(U64.prototype, 'num', {
      get: function() {
        if (this._m_num !== undefined)
          return this._m_num;
        this._m_num = this.hi * 4294967296 + this.lo;
        return this._m_num;
      }
    });

    /**
     * Bits 32..63.
     */

    /**
     * Bits 0..31.
     */

    return U64;
  })();

  /**
   * Name of the backing file (not NUL-terminated), present when backing_file_offset is non-zero.
   */
  Object.defineProperty(Qcow2.prototype, 'backingFileName', {
    get: function() {
      if (this._m_backingFileName !== undefined)
        return this._m_backingFileName;
      if (this.header.backingFileOffset.num != 0) {
        var _pos = this._io.pos;
        this._io.seek(this.header.backingFileOffset.num);
        this._m_backingFileName = KaitaiStream.bytesToStr(this._io.readBytes(this.header.backingFileSize), "ASCII");
        this._io.seek(_pos);
      }
      return this._m_backingFileName;
    }
  });

  /**
   * Where header extensions must end - the backing file name if there is one, else the end of cluster 0.
   */
  Object.defineProperty(Qcow2.prototype, 'extensionsEnd', {
    get: function() {
      if (this._m_extensionsEnd !== undefined)
        return this._m_extensionsEnd;
      this._m_extensionsEnd = (this.header.backingFileOffset.num != 0 ? this.header.backingFileOffset.num : this.header.clusterSize);
      return this._m_extensionsEnd;
    }
  });

  /**
   * The active L1 table, l1_size 8-byte entries at l1_table_offset.
   */
  Object.defineProperty(Qcow2.prototype, 'l1Table', {
    get: function() {
      if (this._m_l1Table !== undefined)
        return this._m_l1Table;
      var _pos = this._io.pos;
      this._io.seek(this.header.l1TableOffset.num);
      this._m_l1Table = [];
      for (var i = 0; i < this.header.l1Size; i++) {
        this._m_l1Table.push(new L1Entry(this._io, this, this._root, this.header.clusterBits, this.header.hasExtendedL2));
      }
      this._io.seek(_pos);
      return this._m_l1Table;
    }
  });

  /**
   * The refcount table, refcount_table_clusters clusters at refcount_table_offset.
   */
  Object.defineProperty(Qcow2.prototype, 'refcountTable', {
    get: function() {
      if (this._m_refcountTable !== undefined)
        return this._m_refcountTable;
      var _pos = this._io.pos;
      this._io.seek(this.header.refcountTableOffset.num);
      this._raw__m_refcountTable = this._io.readBytes(this.header.refcountTableClusters * this.header.clusterSize);
      var _io__raw__m_refcountTable = new KaitaiStream(this._raw__m_refcountTable);
      this._m_refcountTable = new RefcountTable(_io__raw__m_refcountTable, this, this._root, this.header.clusterBits, this.header.refcountOrderEffective);
      this._io.seek(_pos);
      return this._m_refcountTable;
    }
  });

  /**
   * The snapshot table, nb_snapshots variable-length entries at snapshots_offset.
   */
  Object.defineProperty(Qcow2.prototype, 'snapshots', {
    get: function() {
      if (this._m_snapshots !== undefined)
        return this._m_snapshots;
      var _pos = this._io.pos;
      this._io.seek(this.header.snapshotsOffset.num);
      this._m_snapshots = [];
      for (var i = 0; i < this.header.nbSnapshots; i++) {
        this._m_snapshots.push(new SnapshotEntry(this._io, this, this._root, this.header.clusterBits, this.header.hasExtendedL2, i + 1 == this.header.nbSnapshots));
      }
      this._io.seek(_pos);
      return this._m_snapshots;
    }
  });

  /**
   * The image header at offset 0 (72 bytes for version 2, header_length bytes for version 3).
   */

  /**
   * Header extensions, from the end of the header to the backing file name or the end of cluster 0.
   */

  return Qcow2;
})();
Qcow2_.Qcow2 = Qcow2;
});
