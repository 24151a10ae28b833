"""Every command checks whether the schema is behind; it reads the head revision from the
revision files without Alembic. It must name the head Alembic names."""

from __future__ import annotations

import subprocess
import sys

from alembic.script import ScriptDirectory

from stella_core.db import migrate


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    alembic_head = ScriptDirectory.from_config(migrate._config()).get_current_head()
    assert alembic_head is not None
    assert migrate.head_revision() == alembic_head


def test_the_schema_check_imports_no_alembic() -> None:
    code = (
        "import sys\n"
        "from stella_core.db import migrate\n"
        "migrate.head_revision()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
