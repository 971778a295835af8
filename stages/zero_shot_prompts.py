"""The prompts of the zero-shot UCF-101 protocol (`stages.evaluate_t2v_zero_shot`): which classes
are evaluated, and what each is asked as.

A class is asked as its name with the CamelCase split into lower-case words (`class_prompt`), unless
`zero_shot.prompt_file` gives it its own prompt; either way the record says which (`source`), since
the published figures do not say how their prompts were written.
"""

from __future__ import annotations

import difflib
import re

import yaml

from data_prep import storage

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|[_\s]+")


def class_prompt(name: str) -> str:
    """A UCF-101 class name as a prompt: CamelCase split into lower-case words.

    A boundary is a capital after a lower-case letter or digit, or the last capital of a run
    before a lower-case letter (so an acronym stays one word); underscores and spaces are
    boundaries too. "ApplyEyeMakeup" -> "apply eye makeup", "YoYo" -> "yo yo".
    """
    return " ".join(word.lower() for word in _WORD_BOUNDARY.split(name) if word)


def chosen_classes(root: str | None, names: tuple[str, ...] | list[str] = ()) -> dict[str, int]:
    """`{class name: 0-based label}` of `classInd.txt` under `root`: all of them, or `names` (in
    classInd's order); a name not in the file is an error naming the field and the closest names."""
    from data_prep.sources.ucf101 import SPLIT_DIR, read_class_index

    if root is None:
        raise ValueError(
            "zero_shot.root is not set: the UCF-101 folder holding UCF-101/ and ucfTrainTestlist/"
        )
    index = read_class_index(storage.join(root, SPLIT_DIR, "classInd.txt"))
    unknown = [name for name in names if name not in index]
    if unknown:
        hints = [f"{n!r} (did you mean {difflib.get_close_matches(n, index, n=1)}?)" for n in unknown]
        raise ValueError(
            f"zero_shot.classes: {', '.join(hints)} not in {storage.join(root, SPLIT_DIR, 'classInd.txt')}; "
            "use its class names as written there (CamelCase), or [] for all of them"
        )
    wanted = set(names) or set(index)
    return {name: label for name, label in sorted(index.items(), key=lambda item: item[1]) if name in wanted}


def class_prompts(classes: dict[str, int], prompt_file: str | None = None) -> dict[str, dict[str, str]]:
    """`{class: {"prompt": ..., "source": "file" | "rule"}}`: the prompt file's entry where it has
    one, else `class_prompt(class)`."""
    given = read_prompt_file(prompt_file, classes) if prompt_file else {}
    return {
        name: {"prompt": given[name], "source": "file"}
        if name in given
        else {"prompt": class_prompt(name), "source": "rule"}
        for name in classes
    }


def read_prompt_file(location: str, classes: dict[str, int]) -> dict[str, str]:
    """A YAML or JSON mapping `class name -> prompt`. Keys must be evaluated classes, values text."""
    if not storage.is_file(location):
        raise FileNotFoundError(
            f"zero_shot.prompt_file {location} does not exist: a YAML/JSON mapping of class name -> prompt"
        )
    try:
        given = yaml.safe_load(storage.read_bytes(location))
    except yaml.YAMLError as err:
        raise ValueError(f"zero_shot.prompt_file {location}: not YAML or JSON ({err})") from None
    if not isinstance(given, dict):
        raise ValueError(
            f"zero_shot.prompt_file {location}: expected a mapping of class name -> prompt "
            '(e.g. `ApplyEyeMakeup: "a person applying eye makeup"`), got a {type(given).__name__}'
        )
    problems = []
    for name, prompt in given.items():
        if name not in classes:
            close = difflib.get_close_matches(str(name), classes, n=1)
            problems.append(
                f"{name!r} is not an evaluated class" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        elif not isinstance(prompt, str) or not prompt.strip():
            problems.append(f"{name}: the prompt must be non-empty text, got {prompt!r}")
    if problems:
        raise ValueError(f"zero_shot.prompt_file {location}: " + "; ".join(problems))
    return {name: prompt.strip() for name, prompt in given.items()}
