"""multiprocessing.shared_memory and a POSIX shared memory block in /dev/shm, within one
process: made, written through one view, read through another, unlinked."""

from multiprocessing import shared_memory


def handler(event, context):
    block = shared_memory.SharedMemory(create=True, size=event["size"])
    try:
        block.buf[:5] = b"hello"
        other = shared_memory.SharedMemory(name=block.name)
        seen = bytes(other.buf[:5])
        other.buf[5:11] = b" world"
        other.close()
        back = bytes(block.buf[:11])
        listed = shared_memory.ShareableList([1, 2.5, "three"])
        values = list(listed)
        listed.shm.close()
        listed.shm.unlink()
    finally:
        block.close()
        block.unlink()
    return {"seen": seen.decode(), "back": back.decode(), "values": values,
            "size": block.size >= event["size"]}
