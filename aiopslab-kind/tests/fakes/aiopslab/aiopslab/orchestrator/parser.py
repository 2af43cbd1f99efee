"""FAKE ResponseParser with the reply rules of AIOPSLAB.md: exactly one fenced
code block (three backticks, a newline, the call, a newline, three backticks,
no language tag), the API name is the text before the first `(`, exec_shell
takes one quoted string."""

import ast

from aiopslab.utils.status import ResponseParsingError


class ResponseParser:
    def parse(self, response):
        code_block = self.extract_codeblock(response)
        api_name = self.parse_api_name(code_block)
        args, kwargs = self.parse_args(code_block)
        return {"api_name": api_name, "args": args, "kwargs": kwargs}

    def extract_codeblock(self, response):
        lines = response.split("\n")
        fences = [i for i, line in enumerate(lines) if line.strip().startswith("```")]
        if len(fences) != 2:
            raise ResponseParsingError("expected exactly one code block")
        if lines[fences[0]].strip() != "```" or lines[fences[1]] != "```":
            raise ResponseParsingError("code fences must be bare ``` lines (no language tag, no indentation)")
        return "\n".join(lines[fences[0] + 1 : fences[1]]).strip()

    def parse_api_name(self, code):
        paren = code.find("(")
        if paren == -1:
            raise ResponseParsingError("No API call found!")
        return code[:paren].strip()

    def parse_args(self, code):
        try:
            call = ast.parse(code, mode="eval").body
        except SyntaxError as err:
            raise ResponseParsingError(f"invalid call syntax: {err}") from err
        if not isinstance(call, ast.Call):
            raise ResponseParsingError("No API call found!")
        try:
            args = [ast.literal_eval(arg) for arg in call.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except ValueError as err:
            raise ResponseParsingError(f"arguments must be literals: {err}") from err
        return args, kwargs
