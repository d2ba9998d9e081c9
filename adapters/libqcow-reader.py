#!/usr/bin/python3
"""qcow2-ref conform reader adapter for libqcow (Debian package python3-libqcow, module pyqcow).

    /usr/bin/python3 libqcow-reader.py IMAGE RAW

Opens the qcow2 image IMAGE with libqcow and writes its guest content (get_media_size() bytes) to the
raw file RAW; exits 1 with one line on stderr when libqcow refuses the image or a read fails (RAW is
then removed), 2 for a usage error.

Backing files: libqcow reads a backing chain only when told the parent file (file.set_parent), so
this adapter does what QEMU does: the header's backing file name, taken relative to the image's
directory (absolute names as they are), opened with libqcow in turn, up to 16 levels. libqcow can only
use a qcow image as a parent: a raw backing file (or any other non-qcow backing) is refused here,
which the report then shows as a refused valid image — a limit of libqcow, stated, not hidden.

Runs with the system Python (/usr/bin/python3), where Debian installs pyqcow.

Use: qcow2-ref conform --corpus corpus --impl libqcow
 or: qcow2-ref conform --corpus corpus --reader "/usr/bin/python3 $PWD/adapters/libqcow-reader.py {image} {raw}"
"""
import os
import sys

MAX_CHAIN = 16
CHUNK = 1 << 20


def fail(message):
    sys.stderr.write("libqcow-reader: %s\n" % message.replace("\n", " "))
    sys.exit(1)


def open_chain(pyqcow, path, depth, opened):
    """Opens `path` with libqcow and, recursively, its backing file as its parent."""
    f = pyqcow.file()
    f.open(path)
    opened.append(f)
    name = f.get_backing_filename()
    if name:
        if depth >= MAX_CHAIN:
            fail("backing chain longer than %d files" % MAX_CHAIN)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        parent_path = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
        if not pyqcow.check_file_signature(parent_path):
            fail("backing file %r is not a qcow image; libqcow can only use a qcow image as a parent" % name)
        f.set_parent(open_chain(pyqcow, parent_path, depth + 1, opened))
    return f


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: %s IMAGE RAW\n" % argv[0])
        return 2
    image, raw = argv[1], argv[2]
    try:
        import pyqcow
    except ImportError as e:
        fail("cannot import pyqcow (apt-get install python3-libqcow): %s" % e)
    opened = []
    try:
        f = open_chain(pyqcow, image, 0, opened)
        size = f.get_media_size()
        with open(raw, "wb") as out:
            offset = 0
            while offset < size:
                n = min(CHUNK, size - offset)
                data = f.read_buffer_at_offset(n, offset)
                if len(data) != n:
                    fail("short read: %d of %d bytes at offset %d" % (len(data), n, offset))
                if data.count(0) == n:
                    out.seek(n, os.SEEK_CUR)  # keep the raw file sparse
                else:
                    out.write(data)
                offset += n
            out.truncate(size)
    except (IOError, OSError, ValueError, TypeError, MemoryError) as e:
        try:
            os.remove(raw)
        except OSError:
            pass
        fail(str(e))
    finally:
        for f in reversed(opened):
            try:
                f.close()
            except Exception:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
