"""``Storage.delete`` treats absent as done, also when another writer removes the file between
its look and its delete (the race concurrent registry claims run into; real files, no Ray)."""

from __future__ import annotations

from ray_mlops.storage import Storage


class RivalRemoves(Storage):
    """Real local storage where a rival deletes the target right after ``delete`` looks at it."""

    racing = False  # set while delete runs: its look is followed by the rival's removal

    def _info(self, rel: str):
        info = super()._info(rel)
        if self.racing:
            self.fs.delete_file(self.path(rel)) if info.is_file else self.fs.delete_dir(self.path(rel))
        return info

    def delete(self, rel: str) -> None:
        self.racing = True
        try:
            super().delete(rel)
        finally:
            self.racing = False


def test_a_file_removed_by_a_rival_mid_delete_is_deleted_without_error(tmp_path):
    storage = RivalRemoves(str(tmp_path))
    storage.write_bytes("v2/.claims/claim", b"x")
    storage.delete("v2/.claims/claim")
    assert not storage.exists("v2/.claims/claim")


def test_a_folder_removed_by_a_rival_mid_delete_is_deleted_without_error(tmp_path):
    storage = RivalRemoves(str(tmp_path))
    storage.write_bytes("v2/claim/a", b"x")
    storage.delete("v2/claim")
    assert not storage.exists("v2/claim")
