"""license_from_text (scraper/generator/archives.py, also used by scraper/github/local.py): SPDX ids from the
text of a LICENSE/COPYING file. The snippets are the real first lines of the GNU licenses and real notices
(as /usr/share/common-licenses and GitHub repositories have them); the expected ids are the SPDX list's."""

from __future__ import annotations

from pathlib import Path

import pytest

from scraper.repos import license_from_text

GPL2_HEAD = """                    GNU GENERAL PUBLIC LICENSE
                       Version 2, June 1991

 Copyright (C) 1989, 1991 Free Software Foundation, Inc.,
 51 Franklin Street, Fifth Floor, Boston, MA 02110-1301 USA
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.
"""
GPL3_HEAD = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

                            Preamble

  The GNU General Public License is a free, copyleft license for
software and other kinds of works.
"""
LGPL2_HEAD = """                  GNU LIBRARY GENERAL PUBLIC LICENSE
                       Version 2, June 1991

 Copyright (C) 1991 Free Software Foundation, Inc.
 51 Franklin Street, Fifth Floor, Boston, MA  02110-1301  USA
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

[This is the first released version of the library GPL.  It is
 numbered 2 because it goes with version 2 of the ordinary GPL.]
"""
LGPL21_HEAD = """                  GNU LESSER GENERAL PUBLIC LICENSE
                       Version 2.1, February 1999

 Copyright (C) 1991, 1999 Free Software Foundation, Inc.
 51 Franklin Street, Fifth Floor, Boston, MA  02110-1301  USA
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

[This is the first released version of the Lesser GPL.  It also counts
 as the successor of the GNU Library Public License, version 2, hence
 the version number 2.1.]
"""
LGPL3_HEAD = """                   GNU LESSER GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.


  This version of the GNU Lesser General Public License incorporates
the terms and conditions of version 3 of the GNU General Public
License, supplemented by the additional permissions listed below.
"""
AGPL3_HEAD = """                    GNU AFFERO GENERAL PUBLIC LICENSE
                       Version 3, 19 November 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

                            Preamble

  The GNU Affero General Public License is a free, copyleft license for
software and other kinds of works, specifically designed to ensure
cooperation with the community in the case of network server software.
"""
# Notices as projects put them at the top of COPYING or of their sources (comment markers included).
GPL2_OR_LATER_NOTICE = """Copyright (C) 2019 Example Authors

This program is free software; you can redistribute it and/or modify
it under the terms of the GNU General Public License as published by
the Free Software Foundation; either version 2 of the License, or
(at your option) any later version.
"""
GPL3_ONLY_NOTICE = """# This program is free software: you can redistribute it and/or modify
# it under the terms of the GNU General Public License as published by
# the Free Software Foundation, version 3.
"""
AGPL3_OR_LATER_NOTICE = """/*
 * This program is free software: you can redistribute it and/or modify
 * it under the terms of the GNU Affero General Public License as published by
 * the Free Software Foundation, either version 3 of the License, or
 * (at your option) any later version.
 */
"""
LGPL21_OR_LATER_NOTICE = """// This library is free software; you can redistribute it and/or
// modify it under the terms of the GNU Lesser General Public
// License as published by the Free Software Foundation; either
// version 2.1 of the License, or (at your option) any later version.
"""


@pytest.mark.parametrize("text, expected", [
    (GPL2_HEAD, "GPL-2.0"), (GPL3_HEAD, "GPL-3.0"), (LGPL2_HEAD, "LGPL-2.0"), (LGPL21_HEAD, "LGPL-2.1"),
    (LGPL3_HEAD, "LGPL-3.0"), (AGPL3_HEAD, "AGPL-3.0"),
    (GPL2_OR_LATER_NOTICE, "GPL-2.0-or-later"), (GPL3_ONLY_NOTICE, "GPL-3.0"),
    (AGPL3_OR_LATER_NOTICE, "AGPL-3.0-or-later"), (LGPL21_OR_LATER_NOTICE, "LGPL-2.1-or-later"),
    (GPL2_OR_LATER_NOTICE + "\n\n" + GPL2_HEAD, "GPL-2.0-or-later"),  # a notice above the license text
    ("# SPDX-License-Identifier: GPL-3.0-or-later\n", "GPL-3.0-or-later"),
], ids=["gpl2", "gpl3", "lgpl2", "lgpl21", "lgpl3", "agpl3", "gpl2+notice", "gpl3-only-notice", "agpl3+notice",
        "lgpl21+notice", "notice-above-gpl2", "spdx-tag"])
def test_gnu_licenses_by_name_and_version(text, expected):
    assert license_from_text(text) == expected


@pytest.mark.parametrize("text", [
    "GNU GENERAL PUBLIC LICENSE\n\nSee the FSF website.\n",  # no version: unknown, not a guess
    "Do whatever you want with this, but do not blame us.\n",
    "# SPDX-License-Identifier: MIT OR Apache-2.0\n",  # an expression, not one license
    "", None,
], ids=["gpl-without-version", "custom", "spdx-expression", "empty", "none"])
def test_unknown_is_none(text):
    assert license_from_text(text) is None


def test_the_other_licenses_still_named():
    mit = ("MIT License\n\nCopyright (c) 2023 Example\n\nPermission is hereby granted, free of charge, to any person "
           "obtaining a copy\nof this software")
    bsd3 = ("Redistribution and use in source and binary forms, with or without\nmodification, are permitted ...\n"
            "3. Neither the name of the copyright holder nor the names of its\n   contributors may be used")
    bsd2 = "Redistribution and use in source and binary forms, with or without\nmodification, are permitted"
    apache = "                                 Apache License\n                           Version 2.0, January 2004\n"
    assert [license_from_text(t) for t in (mit, bsd3, bsd2, apache)] == ["MIT", "BSD-3-Clause", "BSD-2-Clause",
                                                                          "Apache-2.0"]


COMMON = Path("/usr/share/common-licenses")


@pytest.mark.skipif(not COMMON.is_dir(), reason="needs the full license texts of /usr/share/common-licenses")
@pytest.mark.parametrize("name, expected", [
    ("GPL-1", "GPL-1.0"), ("GPL-2", "GPL-2.0"), ("GPL-3", "GPL-3.0"), ("LGPL-2", "LGPL-2.0"),
    ("LGPL-2.1", "LGPL-2.1"), ("LGPL-3", "LGPL-3.0"), ("MPL-2.0", "MPL-2.0"), ("Apache-2.0", "Apache-2.0"),
    ("BSD", "BSD-3-Clause"),
])
def test_full_license_texts(name, expected):
    # the full GNU texts mention "any later version" (section 9/14 and the How-to-Apply appendix) without
    # putting the program under "or later"; MPL-2.0 names the GNU licenses as secondary licenses
    path = COMMON / name
    if not path.is_file():
        pytest.skip(f"{path} missing")
    assert license_from_text(path.read_text(errors="replace")) == expected
