/** Whether a process with this pid exists (one of another user's counts too): signal 0 checks without sending. */
export function processAlive(pid: number) {
    try {
        process.kill(pid, 0);
        return true;
    } catch (error) {
        return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
}
