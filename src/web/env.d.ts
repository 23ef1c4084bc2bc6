// Vite's ambient types for the dashboard bundle (CSS imports, import.meta.env).
/// <reference types="vite/client" />
