// ESLint for the client's TypeScript (`make lint`): the recommended rules of ESLint and
// typescript-eslint; the generated code (gen/) and the bundle (dist/) are not linted.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["gen/**", "dist/**", "node_modules/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["e2e/**/*.mjs"],
    languageOptions: {
      globals: { window: "readonly", document: "readonly", performance: "readonly", process: "readonly", console: "readonly", URL: "readonly", URLSearchParams: "readonly", setInterval: "readonly", clearInterval: "readonly" },
    },
  },
);
