// Lint rules: typescript-eslint's recommended set, on the TypeScript sources only.
import tseslint from "typescript-eslint";

export default tseslint.config(
    {ignores: ["dist/", "build/", "node_modules/", ".cache/", ".tap/"]},
    ...tseslint.configs.recommended,
    {
        files: ["**/*.ts"],
        rules: {
            "@typescript-eslint/no-unused-vars": ["error", {argsIgnorePattern: "^_"}],
            "@typescript-eslint/consistent-type-imports": "error",
            "eqeqeq": ["error", "always", {null: "ignore"}],
            "prefer-const": "error",
            "no-var": "error"
        }
    }
);
