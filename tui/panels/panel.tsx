import {Box, Text} from 'ink';
import type {ReactNode} from 'react';

/** A titled, bordered box; the focused panel's border stands out. */
export function Panel({title, focused = false, children, width}: {title: string, focused?: boolean, children: ReactNode, width?: number | string}) {
    return (
        <Box flexDirection="column" borderStyle="round" borderColor={focused ? 'cyan' : 'gray'} paddingX={1} flexGrow={1} {...(width !== undefined && {width})}>
            <Text bold color={focused ? 'cyan' : undefined} wrap="truncate-end">{title}</Text>
            {children}
        </Box>
    );
}
